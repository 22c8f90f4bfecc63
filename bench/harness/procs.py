"""Processes the harness starts: pinned to CPUs, logged, watched, and always stopped.

Every server and load generator is started through a :class:`ProcessGroup`. Each child runs
in its own session (so a proxy's master and workers form one process group) under
``taskset -c CPUS``, and, when the harness runs as root, at nice :data:`NICE` so that
background jobs on a shared machine (builds) disturb the measurement less.

Leaving the group's ``with`` block — normally, on an exception, or on Ctrl-C/SIGTERM
(turned into an exception by :func:`install_signal_handlers`) — sends SIGTERM to every
process group still alive, then SIGKILL to those that linger.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_S = 3.0
NICE = -10


class HarnessError(RuntimeError):
    """A failure the harness reports as a clear one-line message (no traceback)."""


def install_signal_handlers() -> None:
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`KeyboardInterrupt`, so cleanup always runs.

    SIGINT is set explicitly because a shell may start a background job with it ignored.
    """

    def _interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)


def priority_prefix() -> list[str]:
    """``nice -n NICE`` when running as root (raising priority needs it), else nothing."""
    return ["nice", "-n", str(NICE)] if os.geteuid() == 0 else []


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    """A process started by a :class:`ProcessGroup`."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    started_at: float

    @property
    def pid(self) -> int:
        """The process id (of taskset's exec'd program, since taskset execs)."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the process's combined stdout/stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise :class:`HarnessError` with the log tail if the process has exited."""
        if not self.alive():
            raise HarnessError(
                f"{self.name} exited with code {self.popen.returncode}; log {self.log_path}:\n{self.log_tail()}"
            )


class ProcessGroup:
    """Starts pinned processes and stops every one of them when the ``with`` block ends."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[Proc] = []

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *_exc: object) -> None:
        # A second Ctrl-C must not cut the cleanup short.
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            self.stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self, name: str, argv: list[str], cpus: str, env: dict[str, str] | None = None) -> Proc:
        """Start ``argv`` pinned to ``cpus`` (taskset list syntax), output to ``LOG_DIR/NAME.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                ["taskset", "-c", cpus, *priority_prefix(), *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        proc = Proc(name, popen, log_path, time.monotonic())
        self._procs.append(proc)
        return proc

    def run(self, name: str, argv: list[str], cpus: str, timeout_s: float) -> Proc:
        """Start ``argv`` pinned to ``cpus`` and wait for it to exit successfully."""
        proc = self.start(name, argv, cpus)
        self.wait(proc, timeout_s)
        return proc

    def wait(self, proc: Proc, timeout_s: float) -> None:
        """Wait for a started process to exit successfully (stopping it if it overruns)."""
        try:
            proc.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            raise HarnessError(f"{proc.name} did not finish within {timeout_s:.0f} s") from None
        if proc.popen.returncode != 0:
            raise HarnessError(
                f"{proc.name} failed with code {proc.popen.returncode}; log {proc.log_path}:\n{proc.log_tail()}"
            )
        self._procs.remove(proc)

    def stop(self, proc: Proc) -> None:
        """Stop one process group: SIGTERM, then SIGKILL after a grace period."""
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.popen.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.popen.wait(timeout=STOP_GRACE_S)
        # Workers of a master that died first may linger in the group.
        _signal_group(proc, signal.SIGKILL)
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        """Stop every process still tracked, newest first."""
        for proc in reversed(list(self._procs)):
            self.stop(proc)


def _signal_group(proc: Proc, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_http_ok(url: str, host: str | None, proc: Proc, timeout_s: float = 15.0) -> None:
    """Poll ``url`` until it answers 200, failing early (with the log) if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    headers = {"Host": host} if host else {}
    last = "no answer"
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            req = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(req, timeout=1.0) as resp:
                if resp.status == 200:
                    return
                last = f"status {resp.status}"
        except urllib.error.HTTPError as err:
            last = f"status {err.code}"
        except (urllib.error.URLError, OSError) as err:
            last = str(err)
        time.sleep(0.05)
    raise HarnessError(
        f"{proc.name} not ready at {url} after {timeout_s:.0f} s ({last}); log {proc.log_path}:\n{proc.log_tail()}"
    )


class CpuMeter:
    """CPU time used by some process trees and by each core over a measured interval.

    ``start()`` and ``stop()`` bracket the interval; ``stop()`` returns, in cores (1.0 = one
    core fully busy), the CPU used by each watched process tree and the busy share of each
    core (all processes, including ones the harness did not start).
    """

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self._t0 = 0.0
        self._proc0: dict[str, float] = {}
        self._cores0: dict[str, tuple[int, int]] = {}

    def start(self) -> None:
        """Begin the interval."""
        self._t0 = time.monotonic()
        self._proc0 = {k: _tree_cpu_seconds(pid) for k, pid in self.roots.items()}
        self._cores0 = _core_jiffies()

    def stop(self) -> dict[str, float]:
        """End the interval; return ``{tree: cores, "core0_busy": share, ...}``."""
        elapsed = max(time.monotonic() - self._t0, 1e-6)
        out = {
            f"{k}_cpu": round((_tree_cpu_seconds(pid) - self._proc0[k]) / elapsed, 3) for k, pid in self.roots.items()
        }
        for core, (busy1, total1) in _core_jiffies().items():
            busy0, total0 = self._cores0.get(core, (busy1, total1))
            out[f"{core}_busy"] = round((busy1 - busy0) / max(total1 - total0, 1), 3)
        return out


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(root: int) -> float:
    """User+system CPU seconds of ``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        stats[pid] = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def _core_jiffies() -> dict[str, tuple[int, int]]:
    """Per core: (busy jiffies, total jiffies) from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if name.startswith("cpu") and name != "cpu":
            nums = [int(v) for v in vals[:8]]
            idle = nums[3] + nums[4]
            out[name.replace("cpu", "core")] = (sum(nums) - idle, sum(nums))
    return out
