"""``gateway-tail``: one of five origins turns slow; who keeps the tail short?

Five Causeway demo origins; the last one adds 2 s to every answer during a window in the
middle of the run (full: from 15 s for 30 s of a 60 s run). Fixed-rate load with latency
correction and a 1 s client timeout goes through one proxy configuration at a time:
Causeway ``qos``, HAProxy ``leastconn`` and ``random(2)``, nginx ``least_conn`` and
round-robin. Fresh origins are started for every proxy run, so the slow window falls at
the same moment of every run (its measured offset is recorded).

Counting (see :mod:`harness.load`): success = 2xx within 1 s of the scheduled start;
timeouts and every other failure count as 1 s in the percentiles. RESULT gives Causeway's
p99 and p99.9 divided by the best peer's of the same round, and Causeway's success rate,
as medians over rounds.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from ..load import COUNTING, Load, run_fixed_rate, unsent_warning
from ..peers import ProxySpec, SlowPhase, start_causeway_origin, start_proxy, wait_origins
from ..procs import CpuMeter
from ..report import spread
from . import LOAD_CPUS, PROXY_CPUS, Context, Outcome

NEEDS = ("gateway", "origin")
CAUSEWAY = ProxySpec("causeway", "qos")
PEERS = (
    ProxySpec("haproxy", "leastconn"),
    ProxySpec("haproxy", "random(2)"),
    ProxySpec("nginx", "least_conn"),
    ProxySpec("nginx", "round-robin"),
)
PROXIES = (CAUSEWAY, *PEERS)
ORIGINS = 5
RATE = 500.0
CLIENT_TIMEOUT_S = 1.0
# Enough connections for every request of one timeout period to be waiting at once.
CONNECTIONS = int(RATE * CLIENT_TIMEOUT_S * 1.2)


@dataclass(frozen=True)
class Plan:
    """Run length, slow window and repetitions."""

    rounds: int
    duration_s: float
    slow: SlowPhase


QUICK = Plan(rounds=1, duration_s=8.0, slow=SlowPhase(after_s=2.0, duration_s=4.0, delay_s=2.0))
FULL = Plan(rounds=3, duration_s=60.0, slow=SlowPhase(after_s=15.0, duration_s=30.0, delay_s=2.0))


def run(ctx: Context) -> Outcome:
    """Run every proxy configuration in every round and summarise."""
    plan = QUICK if ctx.quick else FULL
    rounds = []
    for index in range(plan.rounds):
        order = PROXIES[index % len(PROXIES) :] + PROXIES[: index % len(PROXIES)]
        results = {spec.label: _one_run(ctx, plan, spec, f"r{index + 1}") for spec in order}
        runs = {label: res for label, (res, _) in results.items()}
        warnings = [f"round {index + 1}: {w}" for _, w in results.values() if w]
        rounds.append(
            {
                "round": index + 1,
                "order": [s.label for s in order],
                "runs": runs,
                "ratios": _ratios(runs),
                "warnings": warnings,
            }
        )

    per_proxy = {
        spec.label: {
            metric: spread([r["runs"][spec.label]["latency_ms"][metric] for r in rounds])
            for metric in ("p50", "p99", "p999")
        }
        | {"success_rate": spread([r["runs"][spec.label]["success_rate"] for r in rounds])}
        for spec in PROXIES
    }
    ratios = {
        "p99_ratio_vs_best_peer": spread([r["ratios"]["p99_vs_best_peer"] for r in rounds]),
        "p999_ratio_vs_best_peer": spread([r["ratios"]["p999_vs_best_peer"] for r in rounds]),
        "success_rate": per_proxy[CAUSEWAY.label]["success_rate"],
    }
    data = {
        "plan": asdict(plan),
        "rate_rps": RATE,
        "connections": CONNECTIONS,
        "client_timeout_s": CLIENT_TIMEOUT_S,
        "counting": COUNTING,
        "proxies": [spec.label for spec in PROXIES],
        "summary": {"ratios": ratios, "per_proxy": per_proxy},
        "rounds": rounds,
    }
    result = {k: v["median"] for k, v in ratios.items()}
    warnings = [w for r in rounds for w in r.pop("warnings")]
    return Outcome(data=data, result=result, warnings=warnings)


def _one_run(ctx: Context, plan: Plan, spec: ProxySpec, tag: str) -> tuple[dict, str | None]:
    """Fresh origins (the last one with the slow phase) and a fresh proxy; one fixed-rate run.

    Returns the run's results and a warning, if any.
    """
    name = f"{tag}-{spec.label.replace('/', '-').replace('(', '').replace(')', '')}"
    started = [
        start_causeway_origin(
            ctx.group, ctx.tools, f"{name}-o{i + 1}", LOAD_CPUS, plan.slow if i == ORIGINS - 1 else None
        )
        for i in range(ORIGINS)
    ]
    origins_t0 = time.monotonic()
    try:
        origins = wait_origins(started)
        ep, proxy = start_proxy(ctx.group, ctx.tools, ctx.workdir, spec, origins, PROXY_CPUS)
        offset = time.monotonic() - origins_t0
        load = Load(duration_s=plan.duration_s, connections=CONNECTIONS, rate=RATE, timeout_s=CLIENT_TIMEOUT_S)
        meter = CpuMeter({"proxy": proxy.pid})
        meter.start()
        res = run_fixed_rate(ctx.group, ctx.tools.oha, ep, load, ctx.workdir, f"{name}-load", LOAD_CPUS)
        cpu = meter.stop()
        proxy.check_alive()
        ctx.group.stop(proxy)
    finally:
        for _, proc in started:
            ctx.group.stop(proc)
    window = [round(plan.slow.after_s - offset, 3), round(plan.slow.after_s + plan.slow.duration_s - offset, 3)]
    return {**res.to_json(), "slow_window_s": window, "cpu": cpu}, unsent_warning(spec.label, res)


def _ratios(runs: dict[str, dict]) -> dict[str, float]:
    """Causeway's p99/p99.9 over the best (lowest) peer's, within one round."""
    out = {}
    for metric in ("p99", "p999"):
        best = min(runs[p.label]["latency_ms"][metric] for p in PEERS)
        out[f"{metric}_vs_best_peer"] = round(runs[CAUSEWAY.label]["latency_ms"][metric] / best, 4)
    return out
