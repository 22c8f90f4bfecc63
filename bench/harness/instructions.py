"""Instructions per request, counted by Valgrind's callgrind: a figure a busy machine cannot move.

CPU time per request moves with everything else on the machine (caches, frequency, other
builds); the number of instructions a proxy executes for a request does not. This machine's
kernel gives no hardware counters to ``perf stat``, so the count comes from callgrind, which
runs the program on a synthetic CPU and counts every instruction ("Ir"), in every thread and
every forked worker (``--trace-children=yes``).

A proxy runs under callgrind about 50 times slower, so the count is taken on its own: the proxy
is started fresh under callgrind, warmed up, its counters are zeroed (``callgrind_control -z``),
a fixed number of keep-alive requests is sent, and the counters are dumped. The instructions
of the processes that serve (the leaves of the proxy's process tree: nginx's worker, not its
master, which sleeps in ``sigsuspend`` where Valgrind's gdbserver cannot reach it) are summed
and divided by the number of 2xx answers. Start-up and warm-up are outside the window; timers
and housekeeping inside it are part of what a request costs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .peers import HOSTNAME, Endpoint, ProxySpec, Tools, start_proxy
from .procs import HarnessError, ProcessGroup

WARMUP_REQUESTS = 500
CONNECTIONS = 8
READY_TIMEOUT_S = 120.0
DUMP_TIMEOUT_S = 60.0
_TOTALS = re.compile(r"^(?:totals|summary):\s+(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class InstructionCount:
    """Instructions a proxy executed over a counted window of requests."""

    instructions: int
    ok: int

    @property
    def per_request(self) -> float:
        """Instructions per 2xx answer."""
        return round(self.instructions / max(self.ok, 1), 1)


def unavailable_reason() -> str | None:
    """Why instructions cannot be counted here, or ``None`` when they can."""
    for prog in ("valgrind", "callgrind_control"):
        if shutil.which(prog) is None:
            return f"{prog} is not installed"
    return None


def count(
    group: ProcessGroup,
    tools: Tools,
    workdir: Path,
    spec: ProxySpec,
    origins: list[Endpoint],
    cpus: str,
    load_cpus: str,
    requests: int,
) -> InstructionCount:
    """Start ``spec`` under callgrind, send ``requests`` requests, and count its instructions."""
    name = f"callgrind-{spec.label.replace('/', '-')}"
    out_dir = workdir / name
    out_dir.mkdir(parents=True, exist_ok=True)
    wrapper = [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        "--dump-instr=no",
        f"--callgrind-out-file={out_dir}/callgrind.%p.out",
    ]
    ep, proc = start_proxy(
        group, tools, workdir, spec, origins, cpus, name=name, wrapper=wrapper, ready_timeout_s=READY_TIMEOUT_S
    )
    try:
        _load(group, tools.oha, ep, WARMUP_REQUESTS, workdir, f"{name}-warmup", load_cpus)
        servers = [str(pid) for pid in _leaves(proc.pid)]
        _callgrind_control(["--zero", *servers])
        ok = _load(group, tools.oha, ep, requests, workdir, f"{name}-counted", load_cpus)
        dumped_after = time.time()
        _callgrind_control(["--dump=counted", *servers])
        instructions = _read_dumps(out_dir, dumped_after)
        proc.check_alive()
    finally:
        group.stop(proc)
    return InstructionCount(instructions=instructions, ok=ok)


def _load(group: ProcessGroup, oha: str, ep: Endpoint, requests: int, workdir: Path, name: str, cpus: str) -> int:
    """Send ``requests`` keep-alive GETs and return the number of 2xx answers."""
    json_out = workdir / f"{name}.json"
    argv = [
        oha, ep.url, "--no-tui", "--output-format", "json", "-o", str(json_out),
        "--worker-threads", "1", "-H", f"Host: {HOSTNAME}",
        "-c", str(CONNECTIONS), "-n", str(requests),
    ]  # fmt: skip
    group.run(name, argv, cpus, timeout_s=600)
    status = json.loads(json_out.read_text())["statusCodeDistribution"]
    ok = sum(n for code, n in status.items() if code.startswith("2"))
    if ok < requests * 0.99:
        raise HarnessError(f"{name}: only {ok} of {requests} requests got a 2xx answer ({status})")
    return ok


def _leaves(root: int) -> list[int]:
    """The processes of ``root``'s tree that have no child: the ones doing the work."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    leaves, todo = [], [root]
    while todo:
        pid = todo.pop()
        below = children.get(pid, [])
        if below:
            todo.extend(below)
        else:
            leaves.append(pid)
    return leaves


def _callgrind_control(args: list[str]) -> None:
    """Apply a callgrind_control action to the given callgrind processes."""
    done = subprocess.run(["callgrind_control", *args], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise HarnessError(f"callgrind_control {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")


def _read_dumps(out_dir: Path, after: float) -> int:
    """The summed instruction totals of the dumps written since ``after``, waiting for them."""
    deadline = time.monotonic() + DUMP_TIMEOUT_S
    while time.monotonic() < deadline:
        # The counted dump of each process is the file (callgrind.PID.out.N) written last.
        fresh = [p for p in out_dir.glob("callgrind.*.out.*") if p.stat().st_mtime >= after - 1]
        totals = [_totals(p) for p in fresh]
        if fresh and all(t is not None for t in totals):
            return sum(t for t in totals if t is not None)
        time.sleep(0.2)
    raise HarnessError(f"callgrind wrote no counted dump in {out_dir} within {DUMP_TIMEOUT_S:.0f} s")


def _totals(path: Path) -> int | None:
    """The ``totals:`` (or ``summary:``) instruction count of a finished callgrind dump."""
    found = _TOTALS.search(path.read_text(errors="replace"))
    return int(found.group(1)) if found else None
