"""``tmp-priority``: the blender's classes on a saturated, rate-limited TMP link.

One lab: a rate-limited WAN link (quick: 30 Mbit/s, 40 ms RTT; drop-tail queue of one
bandwidth-delay product). The Site maps ``/cK…`` to priority class K (0..4). All traffic
goes client → Causeway ``frontend`` → TMP link → ``backend`` → origin, downloads flowing
back → front.

1. **class-0 latency** — class-0 GETs (small answers) at a fixed rate over keep-alive
   connections, latency from each request's scheduled start: first on the idle link
   (*unloaded*), then while class-4 downloads saturate the link (*loaded*).
   ``class0_p99_loaded_over_unloaded`` = p99 loaded / p99 unloaded.
2. **class shares** — one endless download per class 0..4 at once; bytes each receives are
   counted by the client over a window that skips the start; each class's share of the sum
   is compared with its weight's share (16/31, 8/31, 4/31, 2/31, 1/31).
   ``share_error_max`` = max over classes of |share − weight share| / weight share.

For reference, the same class-0 latency runs go through nginx (HTTP/1.1 pool over TLS to
nginx back, which has no classes) in full mode.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from .. import wan
from ..procs import Proc
from . import Context, Outcome

NEEDS = ("frontend", "backend", "origin", "link-certs")
WEIGHTS = (16, 8, 4, 2, 1)
HUGE = 100_000_000_000
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Plan:
    """Link and timing."""

    rate_mbit: float
    rtt_ms: float
    rounds: int
    class0_rps: float
    class0_s: float
    background_downloads: int
    share_s: float
    share_skip_s: float
    nginx_reference: bool


QUICK = Plan(rate_mbit=30, rtt_ms=40, rounds=1, class0_rps=20, class0_s=10, background_downloads=4,
             share_s=20, share_skip_s=6, nginx_reference=False)  # fmt: skip
FULL = Plan(rate_mbit=30, rtt_ms=40, rounds=3, class0_rps=20, class0_s=30, background_downloads=4,
            share_s=40, share_skip_s=10, nginx_reference=True)  # fmt: skip


def run(ctx: Context) -> Outcome:
    """Latency and share measurements, ``rounds`` times; RESULT: medians over rounds."""
    plan = QUICK if ctx.quick else FULL
    tools = wan.tools(ctx.tools, wan.BENCH.parent)
    bdp = int(plan.rate_mbit * 1e6 / 8 * plan.rtt_ms / 1e3)
    link = wan.WanLink(plan.rtt_ms, 0.0, plan.rate_mbit, bdp)
    started: list[Proc] = []
    rounds = []
    try:
        lab = wan.start_lab(ctx.group, tools, link)
        started.append(lab.proc)
        origins, origin_procs = wan.start_origins(ctx.group, tools, lab)
        started.extend(origin_procs)
        site = wan.site_file(ctx.workdir, origins, priority_rules=True)
        started.append(wan.start_causeway_backend(ctx.group, tools, lab, ctx.workdir, site))
        front = wan.start_causeway_frontend(ctx.group, tools, lab, ctx.workdir, site)
        started.append(front)
        targets = {"causeway": wan.FRONT_PLAIN_PORTS["causeway"]}
        if plan.nginx_reference:
            back = wan.start_nginx_back(ctx.group, tools, lab, ctx.workdir, origins)
            started.append(back)
            wan.wait_url(lab, "back", f"{lab.addr['back']}:{wan.BACK_TLS_PORT}", True, back)
            started.append(wan.start_nginx_front(ctx.group, tools, lab, ctx.workdir))
            targets["nginx"] = wan.FRONT_PLAIN_PORTS["nginx"]
        for port in targets.values():
            wan.wait_ready(lab, port, [front], tls=False)
        for r in range(plan.rounds):
            entry = {"round": r + 1, "class0": {}}
            for name, port in targets.items():
                entry["class0"][name] = _class0(ctx, tools, lab, plan, port, f"r{r + 1}-{name}")
            entry["shares"] = _shares(ctx, tools, lab, plan, f"r{r + 1}")
            rounds.append(entry)
        for proc in started:
            proc.check_alive()
    finally:
        for proc in reversed(started):
            ctx.group.stop(proc)

    ratios = sorted(r["class0"]["causeway"]["ratio"] for r in rounds)
    errors = sorted(r["shares"]["error_max"] for r in rounds)
    result = {
        "class0_p99_loaded_over_unloaded": ratios[len(ratios) // 2],
        "share_error_max": errors[len(errors) // 2],
    }
    last = rounds[-1]
    data = {
        "plan": asdict(plan),
        "tcp_congestion_control": wan.TCP_CC,
        "link": link.label + f"-queue{bdp}b",
        "weights": list(WEIGHTS),
        "result_rule": "medians over rounds",
        "rounds": rounds,
        "plot": [
            {
                "title": f"class-0 p99 at {plan.class0_rps:g} req/s (last round)",
                "ylabel": "ms",
                "groups": {
                    name: {"unloaded": v["unloaded"]["p99"], "loaded": v["loaded"]["p99"]}
                    for name, v in last["class0"].items()
                },
            },
            {
                "title": "class shares of received bytes (last round)",
                "ylabel": "share",
                "groups": {
                    f"class {c}": {
                        "measured": last["shares"]["measured"][c],
                        "weight share": last["shares"]["expected"][c],
                    }
                    for c in range(5)
                },
            },
        ],
    }
    return Outcome(data=data, result=result, warnings=[])


def _class0(ctx: Context, tools: wan.WanTools, lab: wan.Lab, plan: Plan, port: int, tag: str) -> dict:
    """Class-0 p99 unloaded, then with class-4 downloads saturating the link."""
    extra = ["--rate", f"{plan.class0_rps:g}", "--connections", "8", "--path", "/c0/buy", "--timeout", f"{TIMEOUT_S:g}"]
    unloaded = wan.netclient(ctx.group, tools, lab, ctx.workdir, f"{tag}-class0-unloaded", "rate", port,
                             tls=False, duration_s=plan.class0_s, extra=extra)  # fmt: skip
    background = wan.netclient(
        ctx.group, tools, lab, ctx.workdir, f"{tag}-class4-downloads", "download", port, tls=False,
        duration_s=plan.class0_s + 8, wait=False,
        extra=["--connections", str(plan.background_downloads), "--path", f"/c4/big?bytes={HUGE}"],
    )  # fmt: skip
    time.sleep(4.0)  # the downloads fill the link first
    loaded = wan.netclient(ctx.group, tools, lab, ctx.workdir, f"{tag}-class0-loaded", "rate", port,
                           tls=False, duration_s=plan.class0_s, extra=extra)  # fmt: skip
    bg = wan.read_netclient(ctx.group, background, plan.class0_s + 40)
    bg_bytes = sum(sum(b) for b in bg["bytes"])
    u = wan.latency_summary(unloaded["records"], TIMEOUT_S)
    lo = wan.latency_summary(loaded["records"], TIMEOUT_S)
    return {
        "unloaded": u,
        "loaded": lo,
        "ratio": round(lo["p99"] / u["p99"], 4),
        "background_mbit": round(bg_bytes * 8 / (plan.class0_s + 8) / 1e6, 2),
    }


def _shares(ctx: Context, tools: wan.WanTools, lab: wan.Lab, plan: Plan, tag: str) -> dict:
    """One download per class; each class's share of bytes over the window."""
    before = wan.metrics(lab, "back", wan.ADMIN_PORT + 1)
    doc = wan.netclient(
        ctx.group, tools, lab, ctx.workdir, f"{tag}-shares", "download", wan.FRONT_PLAIN_PORTS["causeway"],
        tls=False, duration_s=plan.share_s,
        extra=["--connections", "5", "--path", ",".join(f"/c{c}/big?bytes={HUGE}" for c in range(5))],
    )  # fmt: skip
    after = wan.metrics(lab, "back", wan.ADMIN_PORT + 1)
    blended = [
        wan.metric_sum(after, "causeway_link_blended_bytes_total", **{"class": str(c)})
        - wan.metric_sum(before, "causeway_link_blended_bytes_total", **{"class": str(c)})
        for c in range(5)
    ]
    first = int(plan.share_skip_s / doc["bucket_s"])
    last = int((plan.share_s - 1.0) / doc["bucket_s"])
    per_class = [sum(doc["bytes"][c][first:last]) for c in range(5)]
    total = max(sum(per_class), 1)
    measured = [round(b / total, 4) for b in per_class]
    expected = [round(w / sum(WEIGHTS), 4) for w in WEIGHTS]
    errors = [round(abs(m - e) / e, 4) for m, e in zip(measured, expected, strict=True)]
    window = (last - first) * doc["bucket_s"]
    return {
        "window_s": window,
        "total_mbit": round(total * 8 / window / 1e6, 2),
        "measured": measured,
        "expected": expected,
        "relative_error": errors,
        "error_max": max(errors),
        "download_errors": doc["errors"],
        "backend_blended_bytes_whole_run": blended,
        "per_second_bytes": [
            [sum(doc["bytes"][c][i : i + int(1 / doc["bucket_s"])]) for i in range(0, len(doc["bytes"][c]), 10)]
            for c in range(5)
        ],
    }
