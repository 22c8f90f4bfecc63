"""``operator``: how fast the operator turns resources into serving pods, on the test bed.

The measurement is an ignored Rust test (``operator/tests/bench.rs``) that drives the test
bed — a real kube-apiserver, kube-controller-manager and the test kubelet running every pod
as a local ``causeway`` process — with the chart installed by ``helm install``. Per round:

* ``kubectl apply`` of a Site (its origins: three origin pods behind a Service) and a
  Frontend → the first request a front-end pod answers from an origin through
  front-end → TMP link → back-end (``apply_to_first_request_s``);
* ``kubectl scale frontend --replicas=3`` → all three front-ends answering
  (``scale_to_serving_s``);
* separately, the test kubelet's own pod start: ``kubectl apply`` of a bare origin pod →
  it answers HTTP (``kubelet_pod_start_s``), which a real kubelet would replace with its
  own (image pull, sandbox) time.

Goals (issue 5): ≤ 3 s and ≤ 2 s. RESULT carries the medians over rounds.
"""

from __future__ import annotations

import os
import statistics
import subprocess
from pathlib import Path

from ..procs import HarnessError
from . import Context, Outcome

NEEDS = ("operator", "frontend", "backend", "origin")
REPO = Path(__file__).resolve().parents[3]
GOALS = {"apply_to_first_request_s": 3.0, "scale_to_serving_s": 2.0}


def _bin_dir() -> str:
    """The test bed's Kubernetes binaries (kube-apiserver, kubectl, helm...)."""
    env_dir = os.environ.get("CAUSEWAY_K8S_BIN")
    if env_dir:
        return env_dir
    script = REPO / "tests" / "testbed" / "provision.sh"
    done = subprocess.run([str(script), "--print-bin-dir"], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise HarnessError(f"tests/testbed/provision.sh --print-bin-dir failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _parse(stdout: str) -> list[dict[str, float]]:
    """The ``BENCH key=value ...`` lines of the Rust measurement, one dict per round."""
    rounds = []
    for line in stdout.splitlines():
        if line.startswith("BENCH "):
            pairs = (item.split("=", 1) for item in line.split()[1:] if "=" in item)
            rounds.append({key: float(value) for key, value in pairs})
    return rounds


def run(ctx: Context) -> Outcome:
    """Run the Rust measurement against the harness's causeway binary; summarise the rounds."""
    rounds = 1 if ctx.quick else 3
    env = {
        **os.environ,
        "CAUSEWAY_K8S_BIN": _bin_dir(),
        "CAUSEWAY_BIN": ctx.tools.causeway,
        "CAUSEWAY_BENCH_ROUNDS": str(rounds),
    }
    argv = [
        "cargo",
        "test",
        "--quiet",
        "-p",
        "causeway-operator",
        "--test",
        "bench",
        "--",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
    log = ctx.workdir / "logs" / "operator-bench.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)
    log.write_text(done.stdout + "\n---- stderr ----\n" + done.stderr)
    measured = _parse(done.stdout)
    if done.returncode != 0 or len(measured) != rounds:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise HarnessError(f"the operator benchmark failed (exit {done.returncode}):\n{tail}")

    keys = ("apply_to_first_request_s", "scale_to_serving_s", "kubelet_pod_start_s")
    summary = {
        key: {
            "min": min(r[key] for r in measured),
            "median": statistics.median(r[key] for r in measured),
            "max": max(r[key] for r in measured),
        }
        for key in keys
    }
    result = {key: summary[key]["median"] for key in keys}
    warnings = [
        f"{key} median {result[key]:.2f} s is above the {goal:.0f} s goal"
        for key, goal in GOALS.items()
        if result[key] > goal
    ]
    plot = [
        {
            "title": "operator on the test bed (median of rounds)",
            "ylabel": "seconds",
            "log": False,
            "groups": {
                key.removesuffix("_s"): {"median": summary[key]["median"], "max": summary[key]["max"]} for key in keys
            },
        }
    ]
    return Outcome(
        data={"rounds": measured, "summary": summary, "goals": GOALS, "plot": plot, "causeway": ctx.tools.causeway},
        result=result,
        warnings=warnings,
    )
