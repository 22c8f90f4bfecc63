"""``bench/run SCENARIO [--quick]``: run one benchmark scenario and print its RESULT line last."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from . import install, report
from .procs import HarnessError, ProcessGroup, install_signal_handlers, priority_prefix
from .scenarios import LOAD_CPUS, PROXY_CPUS, Context, registry

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
RESULTS = BENCH / "results"


def main(argv: list[str]) -> int:
    """Parse arguments, run the scenario, write results; return the exit code."""
    scenarios = registry()
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("scenario", choices=sorted(scenarios))
    parser.add_argument("--quick", action="store_true", help="a short smoke run (under 60 s once tools are built)")
    args = parser.parse_args(argv)
    module = scenarios[args.scenario]
    install_signal_handlers()

    try:
        # NEEDS = None: the scenario runs no proxy or load generator (fuzz), nothing to install.
        tools = None if module.NEEDS is None else install.ensure_tools(REPO, module.NEEDS)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="causeway-bench-") as tmp:
            workdir = Path(tmp)
            try:
                with ProcessGroup(workdir / "logs") as group:
                    outcome = module.run(Context(tools, group, workdir, args.quick))
            except Exception:
                _keep_logs(workdir, args.scenario)
                raise
    except HarnessError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; every process started was stopped", file=sys.stderr)
        return 130

    mode = "quick" if args.quick else "full"
    document = {
        "scenario": args.scenario,
        "mode": mode,
        "elapsed_s": round(time.monotonic() - started, 1),
        "cpu_pinning": {"proxy": PROXY_CPUS, "load_generator_and_origins": LOAD_CPUS},
        "priority": " ".join(priority_prefix()) or "default",
        "machine": report.machine(),
        "versions": report.versions(asdict(tools)) if tools else {},
        "result": outcome.result,
        "warnings": outcome.warnings,
        "data": outcome.data,
    }
    json_path, png_path = report.write(RESULTS, args.scenario, mode, document)
    for warning in outcome.warnings:
        print(f"bench: warning: {warning}", file=sys.stderr)
    print(f"results: {json_path.relative_to(REPO)} {png_path.relative_to(REPO)} ({document['elapsed_s']} s)")
    print(report.result_line(outcome.result))
    return 0


def _keep_logs(workdir: Path, scenario: str) -> None:
    """Copy the process logs of a failed run to ``bench/results/`` and say where."""
    logs = workdir / "logs"
    if logs.is_dir():
        dest = RESULTS / f"{scenario}-failed-{report.stamp()}-logs"
        shutil.copytree(logs, dest)
        print(f"bench: process logs kept in {dest.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
