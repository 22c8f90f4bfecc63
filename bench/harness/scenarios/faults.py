"""``faults``: the fault-injection suite (``tests/faults``) in its long form.

Runs the same Rust cases as ``cargo test`` with ``CAUSEWAY_FAULTS_LONG=1``: longer warm-up,
fault and after-fault windows (an origin down 30 s, hung or failing half the time for 60 s,
a back-end down 30 s, the TMP link lossy and jittery for 90 s, the API server stopped for
30 s...), every case under steady GET + POST load with every answer checked. Each case
prints one ``FAULT case=... idempotent_failed=... non_idempotent_failed=...
in_flight_at_fault=... wrong_body=... recovery_s=...`` line; the cases assert their own
bounds (see ``tests/faults/README.md``), so a failed case fails the scenario.

``--quick`` runs the short form (what CI runs). RESULT: ``cases``, the sums of
``idempotent_failed``, ``non_idempotent_failed`` and ``wrong_body`` over the cases, and the
worst ``recovery_s``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..procs import HarnessError
from . import Context, Outcome
from .k8s_operator import _bin_dir

NEEDS = ("gateway", "frontend", "backend")
REPO = Path(__file__).resolve().parents[3]


def _parse(text: str) -> list[dict]:
    """The ``FAULT key=value ...`` lines: one dict per case (``case`` kept as text)."""
    cases = []
    for line in text.splitlines():
        if line.startswith("FAULT "):
            pairs = dict(item.split("=", 1) for item in line.split()[1:] if "=" in item)
            cases.append({k: (v if k == "case" else float(v)) for k, v in pairs.items()})
    return cases


def run(ctx: Context) -> Outcome:
    """Run every case of ``causeway-faults`` one at a time; collect the FAULT lines."""
    out = ctx.workdir / "faults.txt"
    out.unlink(missing_ok=True)
    env = {
        **os.environ,
        "CAUSEWAY_K8S_BIN": _bin_dir(),
        "CAUSEWAY_BIN": ctx.tools.causeway,
        "CAUSEWAY_FAULTS_OUT": str(out),
    }
    if not ctx.quick:
        env["CAUSEWAY_FAULTS_LONG"] = "1"
    argv = ["cargo", "test", "--quiet", "-p", "causeway-faults", "--", "--nocapture", "--test-threads=1"]
    log = ctx.workdir / "logs" / "faults.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=5400, check=False)
    log.write_text(done.stdout + "\n---- stderr ----\n" + done.stderr)
    cases = _parse(out.read_text() if out.exists() else "")
    if done.returncode != 0 or not cases:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-60:])
        raise HarnessError(f"the fault suite failed (exit {done.returncode}):\n{tail}")

    def total(key: str) -> float:
        return sum(c[key] for c in cases)

    result = {
        "cases": float(len(cases)),
        "idempotent_failed": total("idempotent_failed"),
        "non_idempotent_failed": total("non_idempotent_failed"),
        "wrong_body": total("wrong_body"),
        "worst_recovery_s": max(c["recovery_s"] for c in cases),
    }
    plot = [
        {
            "title": "failed requests per case",
            "ylabel": "requests",
            "log": False,
            "groups": {
                c["case"]: {
                    "idempotent failed": c["idempotent_failed"],
                    "non-idempotent failed": c["non_idempotent_failed"],
                    "in flight at fault": c["in_flight_at_fault"],
                }
                for c in cases
            },
        },
        {
            "title": "time to recover per case",
            "ylabel": "seconds",
            "log": False,
            "groups": {c["case"]: {"recovery": c["recovery_s"]} for c in cases},
        },
    ]
    return Outcome(data={"cases": cases, "plot": plot, "long": not ctx.quick}, result=result)
