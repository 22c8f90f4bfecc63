"""``tmp-fairness``: a TMP link carrying N channels against 4 TCP flows on one bottleneck.

One lab: a 50 Mbit/s, 50 ms RTT WAN link (drop-tail queue of one bandwidth-delay product)
between front and back. In the same direction (back → front → client) run at once:

* N long downloads (N = 1, 4, 16) by a client through Causeway ``frontend`` → TMP link →
  ``backend`` → origin: N channels on the one QUIC connection;
* ``iperf3 -P 4`` from the back namespace to an iperf3 server in the client namespace:
  4 TCP flows, once with each congestion control the kernel offers of ``reno``, ``cubic``
  and ``bbr`` (``-C``, the ``TCP_CONGESTION`` socket option; the JSON lists which ran).

Bytes reaching the client namespace are counted by nftables there, per kind (the downloads'
TCP from the front's address, iperf3's TCP to port 5201), over a window that leaves out the
first seconds (slow start) and the last second. The link's measured share is
``tmp / (tmp + iperf3)``; the expected share of N flows among N + 4 is ``N / (N + 4)``.
RESULT: ``share_ratio_worst`` over the loss-based competitors (Reno and CUBIC; goal 0.8–1.25),
``share_ratio_worst_vs_bbr`` over BBR (goal 0.7–1.4), and one key per competitor.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import wan
from ..procs import HarnessError, Proc
from . import LOAD_CPUS, Context, Outcome

NEEDS = ("frontend", "backend", "origin", "link-certs")
TCP_FLOWS = 4
HUGE = 100_000_000_000  # bytes asked of the origin: the download never ends by itself


@dataclass(frozen=True)
class Plan:
    """Channel counts, rounds and timing."""

    channels: tuple[int, ...]
    rounds: int
    duration_s: float
    skip_s: float
    rate_mbit: float = 50.0
    rtt_ms: float = 50.0


QUICK = Plan(channels=(1, 4, 16), rounds=1, duration_s=22.0, skip_s=6.0)
FULL = Plan(channels=(1, 4, 16), rounds=3, duration_s=45.0, skip_s=10.0)


COMPETITORS = ("reno", "cubic", "bbr")
LOSS_BASED = ("reno", "cubic")


def tcp_congestion_controls() -> list[str]:
    """Those of :data:`COMPETITORS` the kernel offers (``modprobe`` is not tried: a lab may
    not load modules)."""
    available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    return [cc for cc in COMPETITORS if cc in available]


def _worst(ratios: list[float]) -> float | None:
    """The ratio farthest from 1, by factor."""
    if not ratios:
        return None
    return max(ratios, key=lambda x: x - 1.0 if x >= 1 else 1.0 / max(x, 1e-9) - 1.0)


def run(ctx: Context) -> Outcome:
    """Every N in every round; RESULT carries the ratio farthest from 1."""
    plan = QUICK if ctx.quick else FULL
    tools = wan.tools(ctx.tools, wan.BENCH.parent)
    ccs = tcp_congestion_controls()
    if not ccs:
        raise HarnessError("the kernel offers none of reno, cubic, bbr")
    bdp = int(plan.rate_mbit * 1e6 / 8 * plan.rtt_ms / 1e3)
    link = wan.WanLink(plan.rtt_ms, 0.0, plan.rate_mbit, bdp)
    started: list[Proc] = []
    runs = []
    try:
        lab = wan.start_lab(ctx.group, tools, link)
        started.append(lab.proc)
        origins, origin_procs = wan.start_origins(ctx.group, tools, lab)
        started.extend(origin_procs)
        site = wan.site_file(ctx.workdir, origins)
        started.append(wan.start_causeway_backend(ctx.group, tools, lab, ctx.workdir, site))
        front = wan.start_causeway_frontend(ctx.group, tools, lab, ctx.workdir, site)
        started.append(front)
        wan.wait_ready(lab, wan.FRONT_PLAIN_PORTS["causeway"], [front], tls=False)
        _install_client_counters(lab, tools)
        server = ctx.group.start(
            "iperf3-server",
            lab.argv("client", [tools.iperf3, "-s", "-B", lab.addr["client"], "-p", str(wan.IPERF_PORT)]),
            LOAD_CPUS,
        )
        started.append(server)
        time.sleep(0.5)
        for r in range(plan.rounds):
            for cc in ccs:
                for n in plan.channels:
                    runs.append(_measure(ctx, tools, lab, plan, cc, n, r))
                    time.sleep(2.0)
        for proc in started:
            proc.check_alive()
    finally:
        for proc in reversed(started):
            ctx.group.stop(proc)

    result: dict[str, float] = {}
    worst = _worst([r["share_ratio"] for r in runs if r["tcp_congestion_control"] in LOSS_BASED])
    if worst is not None:
        result["share_ratio_worst"] = round(worst, 4)
    for cc in ccs:
        cc_worst = _worst([r["share_ratio"] for r in runs if r["tcp_congestion_control"] == cc])
        if cc_worst is not None:
            result[f"share_ratio_worst_vs_{cc}"] = round(cc_worst, 4)
    by_n = {(cc, n): [r for r in runs if r["channels"] == n and r["tcp_congestion_control"] == cc]
            for cc in ccs for n in plan.channels}  # fmt: skip
    data = {
        "plan": asdict(plan),
        "link": link.label + f"-queue{bdp}b",
        "tcp_congestion_controls": ccs,
        "tcp_flows": TCP_FLOWS,
        "share_rule": "measured = tmp bytes / (tmp + iperf3 bytes) at the client namespace over the window; "
        "expected = N / (N + 4); ratio = measured / expected; RESULT share_ratio_worst: the ratio farthest "
        "from 1 (by factor) over every N and round against reno and cubic; share_ratio_worst_vs_CC: the "
        "same against one congestion control",
        "runs": runs,
        "plot": [
            {
                "title": "link share: measured vs expected N/(N+4)",
                "ylabel": "share of the bottleneck",
                "groups": {
                    f"{cc} N={n}": {
                        "measured (median)": sorted(x["measured_share"] for x in rs)[len(rs) // 2],
                        "expected": rs[0]["expected_share"],
                    }
                    for (cc, n), rs in by_n.items()
                    if rs
                },
            },
            {
                "title": "goodput (Mbit/s)",
                "ylabel": "Mbit/s",
                "groups": {
                    f"{cc} N={n}": {
                        "TMP link": sorted(x["tmp_mbit"] for x in rs)[len(rs) // 2],
                        f"iperf3 ×{TCP_FLOWS}": sorted(x["tcp_mbit"] for x in rs)[len(rs) // 2],
                    }
                    for (cc, n), rs in by_n.items()
                    if rs
                },
            },
        ],
    }
    return Outcome(data=data, result=result, warnings=[])


def _measure(ctx: Context, tools: wan.WanTools, lab: wan.Lab, plan: Plan, cc: str, n: int, round_index: int) -> dict:
    """N downloads and 4 TCP flows together; shares over the window."""
    tag = f"r{round_index + 1}-{cc}-n{n}"
    iperf_out = ctx.workdir / f"{tag}-iperf3.json"
    iperf_argv = [
        tools.iperf3, "-c", lab.addr["client"], "-p", str(wan.IPERF_PORT), "-B", lab.addr["back"],
        "-P", str(TCP_FLOWS), "-C", cc, "-t", f"{plan.duration_s:g}", "-J", "--logfile", str(iperf_out),
    ]  # fmt: skip
    downloads = wan.netclient(
        ctx.group, tools, lab, ctx.workdir, f"{tag}-downloads", "download", wan.FRONT_PLAIN_PORTS["causeway"],
        tls=False, duration_s=plan.duration_s, wait=False,
        extra=["--connections", str(n), "--path", f"/big?bytes={HUGE}"],
    )  # fmt: skip
    iperf = ctx.group.start(f"{tag}-iperf3", lab.argv("back", iperf_argv), LOAD_CPUS)
    t0 = time.monotonic()
    time.sleep(plan.skip_s)
    c0 = _client_counters(lab, tools)
    t_c0 = time.monotonic()
    window = plan.duration_s - plan.skip_s - 1.5
    time.sleep(max(t0 + plan.skip_s + window - time.monotonic(), 0.1))
    c1 = _client_counters(lab, tools)
    elapsed = time.monotonic() - t_c0
    channels = wan.metric_sum(wan.metrics(lab, "front", wan.ADMIN_PORT), "causeway_link_channels")
    doc = wan.read_netclient(ctx.group, downloads, plan.duration_s + 30)
    try:
        iperf.popen.wait(timeout=plan.duration_s + 30)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"{iperf.name} did not finish") from None
    tmp = c1["tmp_bytes"] - c0["tmp_bytes"]
    tcp = c1["iperf_bytes"] - c0["iperf_bytes"]
    measured = tmp / max(tmp + tcp, 1)
    expected = n / (n + TCP_FLOWS)
    retrans = None
    try:
        retrans = json.loads(iperf_out.read_text())["end"]["sum_sent"].get("retransmits")
    except (OSError, ValueError, KeyError):
        pass
    return {
        "round": round_index + 1,
        "tcp_congestion_control": cc,
        "channels": n,
        "window_s": round(elapsed, 2),
        "tmp_mbit": round(tmp * 8 / elapsed / 1e6, 3),
        "tcp_mbit": round(tcp * 8 / elapsed / 1e6, 3),
        "measured_share": round(measured, 4),
        "expected_share": round(expected, 4),
        "share_ratio": round(measured / expected, 4),
        "link_channels_seen": channels,
        "iperf3_retransmits": retrans,
        "download_errors": doc["errors"],
    }


def _install_client_counters(lab: wan.Lab, tools: wan.WanTools) -> None:
    """Byte counters in the client namespace: TMP downloads (from the front) and iperf3."""
    ruleset = textwrap.dedent(
        f"""\
        table inet fair {{
            counter tmp {{ }}
            counter iperf {{ }}
            chain input {{
                type filter hook input priority 0; policy accept;
                ip saddr {lab.addr["front"]} tcp sport {wan.FRONT_PLAIN_PORTS["causeway"]} counter name "tmp"
                ip saddr {lab.addr["back"]} tcp dport {wan.IPERF_PORT} counter name "iperf"
            }}
        }}
        """
    )
    res = subprocess.run(
        lab.argv("client", [tools.nft, "-f", "-"]), input=ruleset, capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise HarnessError(f"nft in the client namespace failed: {res.stderr.strip()[:400]}")


def _client_counters(lab: wan.Lab, tools: wan.WanTools) -> dict[str, int]:
    doc = json.loads(lab.run("client", [tools.nft, "-j", "list", "counters", "table", "inet", "fair"]))
    out = {}
    for item in doc.get("nftables", []):
        c = item.get("counter")
        if c:
            out[f"{c['name']}_bytes"] = int(c["bytes"])
    return out
