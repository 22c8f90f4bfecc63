"""``wan-hol``: head-of-line blocking on a lossy, long WAN link.

For every loss rate a fresh lab: 100 ms RTT WAN with random loss in each direction and a
100 Mbit/s rate limit (drop-tail queue of one bandwidth-delay product). Three front proxies,
one after the other (order rotated per setting), each carrying at once:

* **small requests** — 100 keep-alive client connections sending GETs for 1 KB answers at a
  fixed total rate (latency from the scheduled start; errors count as the 5 s timeout);
* **bulk** — two concurrent 50 MB downloads; goodput = bytes received in the measured
  window / its length (a download that finishes earlier counts its bytes over its own time).

Paths compared (client → front is plain HTTP over the 1 ms link):

* ``haproxy-h2-single`` — HAProxy front multiplexing everything over **one** HTTP/2 TLS
  connection to nginx back (``alpn h2``, ``http-reuse always``, ``pool-max-conn 1``);
* ``nginx-h1-pool`` — nginx front with an HTTP/1.1 pool of TLS keep-alive connections;
* ``causeway`` — Causeway frontend → one TMP link (QUIC: streams do not block each other
  on loss) → backend.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from .. import wan
from ..procs import Proc
from . import Context, Outcome

NEEDS = ("frontend", "backend", "origin", "link-certs")
TARGETS = ("causeway", "haproxy-h2-single", "nginx-h1-pool")
TIMEOUT_S = 5.0
BULK_BYTES = 50_000_000


@dataclass(frozen=True)
class Plan:
    """Loss rates and timing."""

    losses: tuple[float, ...]
    duration_s: float
    small_connections: int
    small_rps: float
    rtt_ms: float = 100.0
    rate_mbit: float = 100.0


QUICK = Plan(losses=(0.01, 0.05), duration_s=8.0, small_connections=100, small_rps=100)
FULL = Plan(losses=(0.01, 0.02, 0.05), duration_s=30.0, small_connections=100, small_rps=100)


def run(ctx: Context) -> Outcome:
    """Every loss rate; RESULT carries the worst ratio over them."""
    plan = QUICK if ctx.quick else FULL
    tools = wan.tools(ctx.tools, wan.BENCH.parent)
    runs = [_setting(ctx, tools, plan, loss, i) for i, loss in enumerate(plan.losses)]
    warnings = [
        f"{r['link']}: {t} had {v['small']['errors']} failed small requests"
        for r in runs
        for t, v in r["targets"].items()
        if v["small"]["errors"]
    ]
    result = {
        "small_p99_ratio_vs_h2_single_tcp": max(r["ratios"]["small_p99_vs_h2_single"] for r in runs),
        "bulk_goodput_ratio_vs_nginx": min(r["ratios"]["bulk_goodput_vs_nginx"] for r in runs),
    }
    data = {
        "plan": asdict(plan),
        "tcp_congestion_control": wan.TCP_CC,
        "result_rule": "small p99 ratio: the worst (largest) over loss rates; bulk ratio: the worst (smallest)",
        "runs": runs,
        "plot": [
            {
                "title": "small requests: p99 (ms)",
                "ylabel": "ms",
                "log": True,
                "groups": {r["link"]: {t: r["targets"][t]["small"]["p99"] for t in TARGETS} for r in runs},
            },
            {
                "title": "bulk: goodput of two downloads (Mbit/s)",
                "ylabel": "Mbit/s",
                "groups": {r["link"]: {t: r["targets"][t]["bulk_mbit"] for t in TARGETS} for r in runs},
            },
        ],
    }
    return Outcome(data=data, result=result, warnings=warnings)


def _setting(ctx: Context, tools: wan.WanTools, plan: Plan, loss: float, index: int) -> dict:
    """One loss rate: fresh lab and servers, the three paths in a rotated order."""
    link = wan.WanLink(plan.rtt_ms, loss, plan.rate_mbit, int(plan.rate_mbit * 1e6 / 8 * plan.rtt_ms / 1e3))
    started: list[Proc] = []
    targets = {}
    try:
        lab = wan.start_lab(ctx.group, tools, link, seed=index + 11)
        started.append(lab.proc)
        origins, origin_procs = wan.start_origins(ctx.group, tools, lab)
        started.extend(origin_procs)
        site = wan.site_file(ctx.workdir, origins)
        back = wan.start_nginx_back(ctx.group, tools, lab, ctx.workdir, origins)
        started.append(back)
        wan.wait_url(lab, "back", f"{lab.addr['back']}:{wan.BACK_TLS_PORT}", True, back)
        started.append(wan.start_causeway_backend(ctx.group, tools, lab, ctx.workdir, site))
        fronts = {
            "causeway": wan.start_causeway_frontend(ctx.group, tools, lab, ctx.workdir, site),
            "haproxy-h2-single": wan.start_haproxy_front(ctx.group, tools, lab, ctx.workdir, h2=True),
            "nginx-h1-pool": wan.start_nginx_front(ctx.group, tools, lab, ctx.workdir),
        }
        started.extend(fronts.values())
        ports = {
            "causeway": wan.FRONT_PLAIN_PORTS["causeway"],
            "haproxy-h2-single": wan.FRONT_PLAIN_PORTS["haproxy-h2"],
            "nginx-h1-pool": wan.FRONT_PLAIN_PORTS["nginx"],
        }
        for name, port in ports.items():
            wan.wait_ready(lab, port, [fronts[name]], tls=False, timeout_s=30)
        order = TARGETS[index % len(TARGETS) :] + TARGETS[: index % len(TARGETS)]
        for target in order:
            targets[target] = _measure(ctx, tools, lab, plan, ports[target], f"{link.label}-{target}")
            time.sleep(1.0)
        for proc in started:
            proc.check_alive()
    finally:
        for proc in reversed(started):
            ctx.group.stop(proc)
    c, h, n = (targets[t] for t in TARGETS)
    return {
        "link": link.label,
        "order": list(order),
        "targets": targets,
        "ratios": {
            "small_p99_vs_h2_single": round(c["small"]["p99"] / h["small"]["p99"], 4),
            "bulk_goodput_vs_nginx": round(c["bulk_mbit"] / max(n["bulk_mbit"], 1e-6), 4),
        },
    }


def _measure(ctx: Context, tools: wan.WanTools, lab: wan.Lab, plan: Plan, port: int, tag: str) -> dict:
    """Small requests and two bulk downloads together through one front proxy."""
    bulk = wan.netclient(
        ctx.group, tools, lab, ctx.workdir, f"{tag}-bulk", "download", port, tls=False,
        duration_s=plan.duration_s + 1.0, wait=False,
        extra=["--connections", "2", "--path", f"/bulk?bytes={BULK_BYTES}"],
    )  # fmt: skip
    time.sleep(0.5)
    small = wan.netclient(
        ctx.group, tools, lab, ctx.workdir, f"{tag}-small", "rate", port, tls=False, duration_s=plan.duration_s,
        extra=["--rate", f"{plan.small_rps:g}", "--connections", str(plan.small_connections),
               "--path", "/small?bytes=1024", "--timeout", f"{TIMEOUT_S:g}"],
    )  # fmt: skip
    doc = wan.read_netclient(ctx.group, bulk, plan.duration_s + 60)
    received = sum(sum(b) for b in doc["bytes"])
    done = [d for d in doc["done_at_s"] if d is not None]
    # Downloads that finished count over their own time; the others over the whole window.
    span = max(done) if len(done) == len(doc["bytes"]) else plan.duration_s + 1.0
    return {
        "small": wan.latency_summary(small["records"], TIMEOUT_S),
        "bulk_mbit": round(received * 8 / span / 1e6, 3),
        "bulk_bytes": received,
        "bulk_completed": len(done),
        "bulk_errors": doc["errors"],
    }
