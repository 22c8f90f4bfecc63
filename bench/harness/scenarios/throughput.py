"""``gateway-throughput``: small keep-alive requests through Causeway, nginx and HAProxy.

Two nginx origins (one worker each, on the load core) answer a small static body. Each
round starts the three proxies fresh over those origins, then, one proxy at a time in an
order rotated every round:

1. **maximum rate** — closed-loop load (``-c CONNECTIONS``) after a short warm-up; the
   proxy's CPU use is recorded to show whether it, not the load core, was the bottleneck,
   and as CPU time per request — the figure least disturbed by other load on the machine;
2. **p99 at a fixed rate** of 50% of nginx's maximum rate of the same round, with latency
   correction and a 1 s client timeout.

Ratios are taken within each round (same machine state for all three) and summarised as
min/median/max over rounds; RESULT carries the medians.

After the rounds, each proxy runs once more under callgrind for the **instructions per
request** (see :mod:`..instructions`): the one figure here that other load on the machine
cannot move. Where callgrind is missing the keys say ``unavailable``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import instructions
from ..load import ClosedLoopResult, Load, run_closed_loop, run_fixed_rate, unsent_warning
from ..peers import ProxySpec, start_nginx_origin, start_proxy, wait_origins
from ..procs import CpuMeter
from ..report import spread
from . import LOAD_CPUS, PROXY_CPUS, Context, Outcome

NEEDS = ("gateway",)
CAUSEWAY = ProxySpec("causeway", "qos")
NGINX = ProxySpec("nginx", "round-robin")
HAPROXY = ProxySpec("haproxy", "roundrobin")
PROXIES = (CAUSEWAY, NGINX, HAPROXY)
ORIGINS = 2
FIXED_RATE_SHARE = 0.5
CLIENT_TIMEOUT_S = 1.0
MIN_PROXY_CPU = 0.9  # below this at maximum rate, the load core was probably the bottleneck


@dataclass(frozen=True)
class Plan:
    """How long and how often to measure."""

    rounds: int
    warmup_s: float
    measure_s: float
    connections: int
    counted_requests: int  # requests counted under callgrind, per proxy


QUICK = Plan(rounds=1, warmup_s=0.5, measure_s=4.0, connections=64, counted_requests=2000)
FULL = Plan(rounds=5, warmup_s=2.0, measure_s=10.0, connections=64, counted_requests=10000)


def run(ctx: Context) -> Outcome:
    """Run every round and summarise."""
    plan = QUICK if ctx.quick else FULL
    origins = wait_origins(
        [start_nginx_origin(ctx.group, ctx.tools, ctx.workdir, f"origin{i + 1}", LOAD_CPUS) for i in range(ORIGINS)]
    )
    warnings: list[str] = []
    rounds = [_round(ctx, plan, origins, r, warnings) for r in range(plan.rounds)]

    ratios = {
        "rps_ratio_vs_nginx": [r["ratios"]["rps_vs_nginx"] for r in rounds],
        "rps_ratio_vs_haproxy": [r["ratios"]["rps_vs_haproxy"] for r in rounds],
        "p99_ratio_vs_nginx": [r["ratios"]["p99_vs_nginx"] for r in rounds],
        "cpu_per_request_ratio_vs_nginx": [r["ratios"]["cpu_per_request_vs_nginx"] for r in rounds],
        "cpu_per_request_ratio_vs_haproxy": [r["ratios"]["cpu_per_request_vs_haproxy"] for r in rounds],
    }
    counted = _instructions(ctx, plan, origins, warnings)
    per_proxy = {
        spec.label: {
            "max_rps": spread([r["max_rate"][spec.label]["ok_rps"] for r in rounds]),
            "fixed_rate_p99_ms": spread([r["fixed_rate"][spec.label]["latency_ms"]["p99"] for r in rounds]),
            "proxy_cpu_at_max_rate": spread([r["max_rate"][spec.label]["cpu"]["proxy_cpu"] for r in rounds]),
            "proxy_cpu_us_per_request": spread([r["max_rate"][spec.label]["proxy_cpu_us_per_request"] for r in rounds]),
        }
        for spec in PROXIES
    }
    data = {
        "plan": asdict(plan),
        "proxies": [spec.label for spec in PROXIES],
        "origins": f"{ORIGINS} × nginx return 200 (1 worker each, core {LOAD_CPUS})",
        "fixed_rate": f"{FIXED_RATE_SHARE:.0%} of nginx's maximum rate in the same round",
        "summary": {"ratios": {k: spread(v) for k, v in ratios.items()}, "per_proxy": per_proxy},
        "rounds": rounds,
        "instructions": counted,
    }
    result: dict[str, float | str] = {k: v["median"] for k, v in data["summary"]["ratios"].items()}
    result.update(counted["ratios"])
    return Outcome(data=data, result=result, warnings=warnings)


def _instructions(ctx: Context, plan: Plan, origins: list, warnings: list[str]) -> dict:
    """Each proxy's instructions per request under callgrind, and Causeway's ratios to the peers."""
    reason = instructions.unavailable_reason()
    if reason:
        warnings.append(f"instructions per request not counted: {reason}")
        keys = ("instructions_per_request_ratio_vs_nginx", "instructions_per_request_ratio_vs_haproxy")
        return {"unavailable": reason, "ratios": dict.fromkeys(keys, "unavailable")}
    per_proxy = {}
    for spec in PROXIES:
        found = instructions.count(
            ctx.group, ctx.tools, ctx.workdir, spec, origins, PROXY_CPUS, LOAD_CPUS, plan.counted_requests
        )
        per_proxy[spec.label] = {"instructions": found.instructions, "ok": found.ok, "per_request": found.per_request}
    c = per_proxy[CAUSEWAY.label]["per_request"]
    return {
        "counted_requests": plan.counted_requests,
        "connections": instructions.CONNECTIONS,
        "per_proxy": per_proxy,
        "ratios": {
            "instructions_per_request_ratio_vs_nginx": round(c / per_proxy[NGINX.label]["per_request"], 4),
            "instructions_per_request_ratio_vs_haproxy": round(c / per_proxy[HAPROXY.label]["per_request"], 4),
        },
    }


def _round(ctx: Context, plan: Plan, origins: list, index: int, warnings: list[str]) -> dict:
    """One round: start the proxies, measure maximum rates, then fixed-rate latency."""
    order = PROXIES[index % len(PROXIES) :] + PROXIES[: index % len(PROXIES)]
    started = {spec.label: start_proxy(ctx.group, ctx.tools, ctx.workdir, spec, origins, PROXY_CPUS) for spec in order}
    try:
        max_rate = {}
        for spec in order:
            ep, proc = started[spec.label]
            tag = f"r{index + 1}-{spec.label.replace('/', '-')}"
            warm = Load(duration_s=plan.warmup_s, connections=plan.connections)
            run_closed_loop(ctx.group, ctx.tools.oha, ep, warm, ctx.workdir, f"{tag}-warmup", LOAD_CPUS)
            meter = CpuMeter({"proxy": proc.pid})
            meter.start()
            load = Load(duration_s=plan.measure_s, connections=plan.connections)
            res = run_closed_loop(ctx.group, ctx.tools.oha, ep, load, ctx.workdir, f"{tag}-max", LOAD_CPUS)
            cpu = meter.stop()
            proc.check_alive()
            per_request_us = round(cpu["proxy_cpu"] / max(res.ok_rps, 1.0) * 1e6, 2)
            max_rate[spec.label] = {**asdict(res), "cpu": cpu, "proxy_cpu_us_per_request": per_request_us}
            warnings.extend(f"round {index + 1}: {w}" for w in _max_rate_warnings(spec.label, res, cpu))

        rate = round(FIXED_RATE_SHARE * max_rate[NGINX.label]["ok_rps"], 1)
        fixed = {}
        for spec in order:
            ep, proc = started[spec.label]
            tag = f"r{index + 1}-{spec.label.replace('/', '-')}"
            load = Load(duration_s=plan.measure_s, connections=plan.connections, rate=rate, timeout_s=CLIENT_TIMEOUT_S)
            res = run_fixed_rate(ctx.group, ctx.tools.oha, ep, load, ctx.workdir, f"{tag}-fixed", LOAD_CPUS)
            proc.check_alive()
            warning = unsent_warning(spec.label, res)
            if warning:
                warnings.append(f"round {index + 1}: {warning}")
            entry = res.to_json()
            entry.pop("timeline")
            fixed[spec.label] = entry
    finally:
        for _, proc in started.values():
            ctx.group.stop(proc)

    c, n, h = (CAUSEWAY.label, NGINX.label, HAPROXY.label)
    return {
        "round": index + 1,
        "order": [spec.label for spec in order],
        "fixed_rate_rps": rate,
        "max_rate": max_rate,
        "fixed_rate": fixed,
        "ratios": {
            "rps_vs_nginx": round(max_rate[c]["ok_rps"] / max_rate[n]["ok_rps"], 4),
            "rps_vs_haproxy": round(max_rate[c]["ok_rps"] / max_rate[h]["ok_rps"], 4),
            "p99_vs_nginx": round(fixed[c]["latency_ms"]["p99"] / fixed[n]["latency_ms"]["p99"], 4),
            "cpu_per_request_vs_nginx": round(
                max_rate[c]["proxy_cpu_us_per_request"] / max_rate[n]["proxy_cpu_us_per_request"], 4
            ),
            "cpu_per_request_vs_haproxy": round(
                max_rate[c]["proxy_cpu_us_per_request"] / max_rate[h]["proxy_cpu_us_per_request"], 4
            ),
        },
    }


def _max_rate_warnings(label: str, res: ClosedLoopResult, cpu: dict[str, float]) -> list[str]:
    """Warnings about a maximum-rate run: failed requests, or a proxy that was not the bottleneck."""
    out = []
    if res.failed:
        out.append(f"{label} failed {res.failed} requests at maximum rate ({res.status}, {res.errors})")
    if cpu["proxy_cpu"] < MIN_PROXY_CPU:
        out.append(
            f"{label} used {cpu['proxy_cpu']:.2f} of core {PROXY_CPUS} at maximum rate; "
            f"the load core (busy {cpu.get('core' + LOAD_CPUS + '_busy', 0):.2f}) may have been the limit"
        )
    foreign = cpu.get(f"core{PROXY_CPUS}_busy", 0.0) - cpu["proxy_cpu"]
    if foreign > 0.1:
        out.append(f"other processes used {foreign:.2f} of core {PROXY_CPUS} during {label}")
    return out
