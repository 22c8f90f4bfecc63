"""``fuzz``: every cargo-fuzz target under ``fuzz/`` for a fixed time each (not part of CI).

Targets (see ``fuzz/README.md``): ``frame_decode`` (TMP frames), ``site_classify`` (Site
manifests and request classification), ``cache_control`` (Cache-Control and freshness),
``dns_query`` (the redirector's raw query to response bytes). All are built first with
``fuzz/run build`` (nightly and cargo-fuzz are installed when missing), then run one after
the other through ``fuzz/run TARGET SECONDS``: :data:`QUICK_SECONDS` each with ``--quick``,
:data:`FULL_SECONDS` otherwise, or ``FUZZ_SECONDS`` from the environment. Each run starts from
the committed seeds and the corpus earlier runs grew (``fuzz/corpus/``, ignored by git).

Fuzzing is throughput on a shared machine, not a latency measurement: the fuzzers run at
``nice -n 19`` on any core. A crash ends that target's run early (libFuzzer stops at the first)
and leaves the input in ``fuzz/artifacts/TARGET/``; the other targets still run, and the
crash is counted in RESULT and named in a warning.

RESULT: ``targets``, ``seconds_per_target``, ``execs_total`` (every target's executions) and
``crashes`` (targets that crashed: crash, timeout or out-of-memory inputs written). A table
with each target's executions, rate, coverage and corpus size is printed before it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from ..procs import HarnessError
from . import Context, Outcome

# No proxy or load generator: nothing for the harness to install or build.
NEEDS = None
REPO = Path(__file__).resolve().parents[3]
FUZZ = REPO / "fuzz"
TARGETS = ("frame_decode", "site_classify", "cache_control", "dns_query")
QUICK_SECONDS = 30
FULL_SECONDS = 600
# What libFuzzer writes for an input that failed: a crash, a timeout, an out-of-memory.
FAILURE_PREFIXES = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")

_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.MULTILINE)
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.MULTILINE)
_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", re.MULTILINE)


def _seconds(quick: bool) -> int:
    override = os.environ.get("FUZZ_SECONDS")
    if override:
        if not override.isdigit() or int(override) == 0:
            raise HarnessError(f"FUZZ_SECONDS={override!r} is not a positive number of seconds")
        return int(override)
    return QUICK_SECONDS if quick else FULL_SECONDS


def _failures(target: str) -> set[str]:
    directory = FUZZ / "artifacts" / target
    if not directory.is_dir():
        return set()
    return {p.name for p in directory.iterdir() if p.name.startswith(FAILURE_PREFIXES)}


def _run_logged(argv: list[str], log: Path, timeout_s: float) -> int:
    """Run ``argv`` in its own session with output to ``log``; stop the whole session on
    timeout or interruption (cargo starts the fuzzer as a child of its own)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
        try:
            return proc.wait(timeout=timeout_s)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise


def _fuzz(ctx: Context, target: str, seconds: int) -> dict:
    """One target's run and what libFuzzer reported about it."""
    before = _failures(target)
    log = ctx.workdir / f"fuzz-{target}.log"
    print(f"[bench] fuzzing {target} for {seconds} s", flush=True)
    started = time.monotonic()
    # Margin for libFuzzer loading the corpus and writing its final statistics.
    code = _run_logged(["nice", "-n", "19", str(FUZZ / "run"), target, str(seconds)], log, seconds + 300)
    elapsed = time.monotonic() - started
    text = log.read_text(errors="replace")
    stats = {k: int(v) for k, v in _STAT.findall(text)}
    statuses = _STATUS.findall(text)
    done = _DONE.findall(text)
    execs = stats.get("number_of_executed_units") or (int(statuses[-1][0]) if statuses else 0)
    new_failures = sorted(_failures(target) - before)
    if code != 0 and not new_failures:
        raise HarnessError(f"fuzz/run {target} exited {code} without a crash input; its log:\n{text[-3000:]}")
    return {
        "target": target,
        "exit_code": code,
        "execs": execs,
        "seconds": int(done[-1][1]) if done else round(elapsed),
        "wall_s": round(elapsed, 1),
        "execs_per_s": stats.get("average_exec_per_sec", 0),
        "coverage": int(statuses[-1][1]) if statuses else 0,
        "features": int(statuses[-1][2]) if statuses else 0,
        "corpus": int(statuses[-1][3]) if statuses else 0,
        "new_units": stats.get("new_units_added", 0),
        "peak_rss_mb": stats.get("peak_rss_mb", 0),
        "failures": [str((FUZZ / "artifacts" / target / name).relative_to(REPO)) for name in new_failures],
        "log_tail": text[-2000:],
    }


def run(ctx: Context) -> Outcome:
    """Build every target, run each for the fixed time, summarise."""
    seconds = _seconds(ctx.quick)
    print("[bench] building the fuzz targets: fuzz/run build", flush=True)
    build_log = ctx.workdir / "fuzz-build.log"
    if _run_logged(["nice", "-n", "19", str(FUZZ / "run"), "build"], build_log, 3600) != 0:
        raise HarnessError(f"fuzz/run build failed:\n{build_log.read_text(errors='replace')[-3000:]}")
    runs = [_fuzz(ctx, target, seconds) for target in TARGETS]
    crashed = [r for r in runs if r["failures"]]

    print(f"{'target':<15}{'execs':>14}{'exec/s':>10}{'cov':>8}{'corpus':>8}  failures")
    for r in runs:
        print(
            f"{r['target']:<15}{r['execs']:>14,}{r['execs_per_s']:>10,}{r['coverage']:>8}{r['corpus']:>8}  "
            + (", ".join(r["failures"]) or "none")
        )
    warnings = [f"{r['target']} crashed: {', '.join(r['failures'])}" for r in crashed]
    plot = [
        {
            "title": "executions per target",
            "ylabel": "executions",
            "log": True,
            "groups": {r["target"]: {"execs": r["execs"]} for r in runs},
        },
        {
            "title": "executions per second (average)",
            "ylabel": "exec/s",
            "log": True,
            "groups": {r["target"]: {"exec/s": r["execs_per_s"]} for r in runs},
        },
        {
            "title": "coverage at the end (edges)",
            "ylabel": "edges",
            "log": False,
            "groups": {r["target"]: {"cov": r["coverage"]} for r in runs},
        },
    ]
    return Outcome(
        data={"seconds_per_target": seconds, "runs": runs, "plot": plot},
        result={
            "targets": len(runs),
            "seconds_per_target": seconds,
            "execs_total": sum(r["execs"] for r in runs),
            "crashes": len(crashed),
        },
        warnings=warnings,
    )
