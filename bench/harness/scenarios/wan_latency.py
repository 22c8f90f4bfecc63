"""``wan-latency``: short-lived clients across a WAN, straight or through a front proxy.

For every WAN setting (RTT × loss) a fresh lab is built (see :mod:`harness.wan`) and four
paths are measured one after the other, in an order rotated per setting:

* ``direct`` — the client crosses the WAN itself: TCP + TLS handshake with nginx "back"
  (which proxies to the origin next to it), then its requests;
* ``nginx-keepalive`` — client TLS to nginx front (1 ms away), which keeps an HTTP/1.1 pool
  of TLS connections to nginx back (``keepalive``, ``proxy_ssl_session_reuse``);
* ``haproxy-reuse`` — client TLS to HAProxy front with ``http-reuse always``, TLS to nginx back;
* ``causeway`` — client TLS to Causeway ``frontend``, one TMP link (QUIC) to Causeway
  ``backend``, which talks to the origin.

Load: new TLS connections at a fixed rate (open loop), each sending one or two small GETs
(alternately) and closing. A first request's latency runs from the connection's scheduled
start to its answer's last byte (handshakes included); a second one's from its send. Each
path gets a short warm-up first (pools filled) that is not measured.

Upstream handshakes on the WAN hop are new TCP (nginx, HAProxy) or UDP (Causeway) flows from
the front namespace to the back, counted by nftables in the back namespace, warm-up and
proxy start included.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import wan
from ..procs import Proc
from . import Context, Outcome

NEEDS = ("frontend", "backend", "origin", "link-certs")
TARGETS = ("direct", "nginx-keepalive", "haproxy-reuse", "causeway")
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Plan:
    """What to measure and for how long."""

    rtts_ms: tuple[float, ...]
    losses: tuple[float, ...]
    warmup_s: float
    measure_s: float
    sessions_per_s: float


QUICK = Plan(rtts_ms=(50,), losses=(0.0, 0.01), warmup_s=1.0, measure_s=6.0, sessions_per_s=40)
FULL = Plan(rtts_ms=(50, 100, 200), losses=(0.0, 0.01), warmup_s=2.0, measure_s=15.0, sessions_per_s=40)


def run(ctx: Context) -> Outcome:
    """Every WAN setting in turn; RESULT carries the worst ratio over the settings."""
    plan = QUICK if ctx.quick else FULL
    tools = wan.tools(ctx.tools, wan.BENCH.parent)
    settings = [wan.WanLink(rtt, loss) for rtt in plan.rtts_ms for loss in plan.losses]
    runs = [_setting(ctx, tools, plan, link, i) for i, link in enumerate(settings)]

    warnings = []
    for r in runs:
        for target, summary in r["latency_ms"].items():
            if summary["errors"]:
                warnings.append(f"{r['link']}: {target} had {summary['errors']} failed requests")
    hs = {t: sum(r["handshakes"][t] for r in runs) for t in ("nginx-keepalive", "haproxy-reuse", "causeway")}
    result = {
        "p50_ratio_vs_direct": max(r["ratios"]["p50_vs_direct"] for r in runs),
        "p99_ratio_vs_nginx_keepalive": max(r["ratios"]["p99_vs_nginx_keepalive"] for r in runs),
        "upstream_handshakes_ratio_vs_nginx": round(hs["causeway"] / max(hs["nginx-keepalive"], 1), 4),
    }
    data = {
        "plan": asdict(plan),
        "tcp_congestion_control": wan.TCP_CC,
        "topology": "client —1 ms RTT— front —WAN— back (origin); TLS from the client; see harness/wan.py",
        "targets": list(TARGETS),
        "result_rule": "p50/p99 ratios: the worst (largest) over the WAN settings; handshakes: totals",
        "handshakes_total": hs,
        "runs": runs,
        "plot": [
            {
                "title": "p50 latency per request (ms)",
                "ylabel": "ms",
                "groups": {r["link"]: {t: r["latency_ms"][t]["p50"] for t in TARGETS} for r in runs},
            },
            {
                "title": "p99 latency per request (ms)",
                "ylabel": "ms",
                "groups": {r["link"]: {t: r["latency_ms"][t]["p99"] for t in TARGETS} for r in runs},
            },
            {
                "title": "upstream handshakes on the WAN hop",
                "ylabel": "connections",
                "log": True,
                "groups": {r["link"]: {t: max(r["handshakes"][t], 0.5) for t in TARGETS[1:]} for r in runs},
            },
        ],
    }
    return Outcome(data=data, result=result, warnings=warnings)


def _setting(ctx: Context, tools: wan.WanTools, plan: Plan, link: wan.WanLink, index: int) -> dict:
    """One WAN setting: a fresh lab and servers, the four paths measured in a rotated order."""
    started: list[Proc] = []
    try:
        lab = wan.start_lab(ctx.group, tools, link, seed=index + 1)
        started.append(lab.proc)
        wan.install_counters(lab, tools)
        origins, origin_procs = wan.start_origins(ctx.group, tools, lab)
        started.extend(origin_procs)
        site = wan.site_file(ctx.workdir, origins)
        back = wan.start_nginx_back(ctx.group, tools, lab, ctx.workdir, origins)
        started.append(back)
        wan.wait_url(lab, "back", f"{lab.addr['back']}:{wan.BACK_TLS_PORT}", True, back)
        started.append(wan.start_causeway_backend(ctx.group, tools, lab, ctx.workdir, site))
        before_causeway = wan.read_counters(lab, tools)
        fronts = {
            "causeway": wan.start_causeway_frontend(ctx.group, tools, lab, ctx.workdir, site),
            "nginx-keepalive": wan.start_nginx_front(ctx.group, tools, lab, ctx.workdir),
            "haproxy-reuse": wan.start_haproxy_front(ctx.group, tools, lab, ctx.workdir),
        }
        started.extend(fronts.values())
        ports = {
            "direct": wan.BACK_TLS_PORT,
            "nginx-keepalive": wan.FRONT_PORTS["nginx"],
            "haproxy-reuse": wan.FRONT_PORTS["haproxy"],
            "causeway": wan.FRONT_PORTS["causeway"],
        }
        # Readiness probes go through the proxies and would open upstream connections of their
        # own: nginx and HAProxy are probed only through their counted runs below.
        wan.wait_ready(lab, ports["causeway"], [fronts["causeway"]])

        order = TARGETS[index % len(TARGETS) :] + TARGETS[: index % len(TARGETS)]
        latency, handshakes = {}, {}
        for target in order:
            target_ns = "back" if target == "direct" else "front"
            counted = wan.read_counters(lab, tools)
            tag = f"{link.label}-{target}"
            common = {"tls": True, "target_ns": target_ns}
            extra = ["--rate", f"{plan.sessions_per_s:g}", "--requests", "1,2", "--timeout", f"{TIMEOUT_S:g}"]
            wan.netclient(ctx.group, tools, lab, ctx.workdir, f"{tag}-warmup", "sessions", ports[target],
                          duration_s=plan.warmup_s, extra=extra, **common)  # fmt: skip
            doc = wan.netclient(ctx.group, tools, lab, ctx.workdir, f"{tag}-measure", "sessions", ports[target],
                                duration_s=plan.measure_s, extra=extra, **common)  # fmt: skip
            after = wan.read_counters(lab, tools)
            latency[target] = wan.latency_summary(doc["records"], TIMEOUT_S)
            latency[target]["first_request_p50"] = round(
                wan.percentile([r["ms"] for r in doc["records"] if r["k"] == 0], 50), 2
            )
            if target in ("nginx-keepalive", "haproxy-reuse"):
                handshakes[target] = after["tcp_new"] - counted["tcp_new"]
        end = wan.read_counters(lab, tools)
        handshakes["causeway"] = end["quic_new"] - before_causeway["quic_new"]
        handshakes["causeway_quic_initial_packets"] = end["quic_initial"] - before_causeway["quic_initial"]
        link_metrics = wan.metrics(lab, "front", wan.ADMIN_PORT)
        for proc in started:
            proc.check_alive()
    finally:
        for proc in reversed(started):
            ctx.group.stop(proc)

    return {
        "link": link.label,
        "order": list(order),
        "latency_ms": latency,
        "handshakes": handshakes,
        "causeway_link": {
            "rtt_s": wan.metric_sum(link_metrics, "causeway_link_rtt_seconds"),
            "loss": wan.metric_sum(link_metrics, "causeway_link_loss_ratio"),
        },
        "ratios": {
            "p50_vs_direct": round(latency["causeway"]["p50"] / latency["direct"]["p50"], 4),
            "p99_vs_nginx_keepalive": round(latency["causeway"]["p99"] / latency["nginx-keepalive"]["p99"], 4),
        },
    }
