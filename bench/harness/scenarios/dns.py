"""``dns``: the DNS redirector's dynamic answers against BIND serving the same names statically.

Both servers answer the same zone — ``SITES`` hostnames under ``bench.example``, each with
``FRONTENDS`` front-ends in two regions — from the same query file, one after the other,
each pinned alone to the proxy core with one worker thread (redirector ``--threads 1``,
``named -n 1 -U 1``); dnsperf runs on the load core. The redirector computes every answer
(region by the EDNS Client Subnet each query carries, weighted draw of ``FRONTENDS``
addresses); BIND answers the same ``FRONTENDS`` A records from its static zone (it ignores
ECS as an authoritative server), so both answers are the same size.

Per round and server, in an order rotated every round:

1. **maximum rate** — dnsperf closed loop (``-q OUTSTANDING``), after a warm-up;
2. **p99 at a fixed rate** of 50% of BIND's maximum rate in that round (``-Q``), from
   dnsperf's per-query latencies (``-v``); lost queries count as the 1 s timeout.

RESULT: ``qps_ratio_vs_bind`` (redirector / BIND, maximum rate; goal ≥ 1.0),
``p99_ratio_vs_bind`` (goal ≤ 1.0), and ``cpu_per_query_ratio_vs_bind`` (the servers' CPU
time per query at maximum rate: the figure least disturbed when dnsperf, not the server,
limits the rate, or other work shares the machine), medians over rounds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import install
from ..procs import CpuMeter, HarnessError, Proc, free_port, priority_prefix
from ..report import spread
from . import LOAD_CPUS, PROXY_CPUS, Context, Outcome

NEEDS: tuple[str, ...] = ()
REPO = Path(__file__).resolve().parents[3]
ZONE = "bench.example"
SITES = 50
FRONTENDS = 4
FIXED_RATE_SHARE = 0.5
TIMEOUT_S = 1.0
SERVERS = ("redirector", "bind")


@dataclass(frozen=True)
class Plan:
    """How long and how often to measure."""

    rounds: int
    warmup_s: float
    measure_s: float
    fixed_rate_s: float
    outstanding: int


QUICK = Plan(rounds=1, warmup_s=1.0, measure_s=5.0, fixed_rate_s=4.0, outstanding=100)
FULL = Plan(rounds=3, warmup_s=2.0, measure_s=10.0, fixed_rate_s=8.0, outstanding=100)


def _frontend(site: int, region: int, i: int) -> str:
    """Front-end ``i`` of ``site`` in region 0 (eu) or 1 (us)."""
    return f"10.{region}.{site}.{i + 1}"


def _tools(repo: Path) -> dict[str, str]:
    """dnsperf and named from Debian; the redirector built in release mode (or ``REDIRECTOR_BIN``)."""
    wanted = (("dnsperf", "dnsperf"), ("named", "bind9"))
    missing = [pkg for prog, pkg in wanted if not shutil.which(prog, path=install.SBIN_PATH)]
    if missing:
        install._apt_install(missing)  # noqa: SLF001 - the harness's own installer
    override = os.environ.get("REDIRECTOR_BIN")
    if override:
        binary = Path(override)
    else:
        print("[bench] building causeway-redirector: cargo build --release -p causeway-redirector", flush=True)
        done = subprocess.run(["cargo", "build", "--release", "-p", "causeway-redirector"], cwd=repo, check=False)
        if done.returncode != 0:
            raise HarnessError("could not build causeway-redirector (cargo's errors are above)")
        binary = Path(os.environ.get("CARGO_TARGET_DIR", repo / "target")) / "release" / "causeway-redirector"
    if not binary.is_file():
        raise HarnessError(f"causeway-redirector binary not found at {binary}")
    tools = {prog: shutil.which(prog, path=install.SBIN_PATH) or prog for prog, _ in wanted}
    tools["redirector"] = str(binary)
    return tools


def _write_inputs(workdir: Path) -> dict[str, Path]:
    """The redirector's directory, BIND's zone and config, and the shared query file.

    Each Site has ``FRONTENDS`` front-ends in eu and as many in us; the queries' ECS places
    the client in eu, so the redirector answers the eu ones, which are BIND's static RRset.
    """
    names = [f"site{s}.{ZONE}" for s in range(SITES)]
    directory = ["zones:", f"  - name: {ZONE}", f"    nameservers: [{{ name: ns1.{ZONE}, addresses: [127.0.0.1] }}]"]
    directory.append("sites:")
    directory += [f"  - {{ name: site{s}, hostnames: [{names[s]}] }}" for s in range(SITES)]
    directory.append("frontends:")
    for s in range(SITES):
        for r, (region, subnet) in enumerate((("eu", "172.16.0.0/12"), ("us", "192.168.0.0/16"))):
            directory += [
                f"  - name: edge-{region}-{s}",
                f"    region: {region}",
                f"    sites: [site{s}]",
                f"    clientSubnets: [{subnet}]",
                "    endpoints:",
            ]
            directory += [f"      - {{ address: {_frontend(s, r, i)}, headroom: {i + 1} }}" for i in range(FRONTENDS)]
    paths = {"directory": workdir / "directory.yaml"}
    paths["directory"].write_text("\n".join(directory) + "\n")

    zone = [
        "$TTL 30",
        f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 604800 30",
        f"@ IN NS ns1.{ZONE}.",
        "ns1 IN A 127.0.0.1",
    ]
    for s in range(SITES):
        zone += [f"site{s} IN A {_frontend(s, 0, i)}" for i in range(FRONTENDS)]
    paths["zone"] = workdir / f"{ZONE}.db"
    paths["zone"].write_text("\n".join(zone) + "\n")

    # Each query asks one name; dnsperf's -E adds the same ECS option to every query.
    paths["queries"] = workdir / "queries.txt"
    paths["queries"].write_text("".join(f"{name} A\n" for name in names * 20))
    return paths


def _named_config(workdir: Path, zone: Path, port: int) -> Path:
    conf = workdir / "named.conf"
    conf.write_text(
        f"""options {{
    directory "{workdir}";
    pid-file "{workdir}/named.pid";
    session-keyfile "{workdir}/session.key";
    managed-keys-directory "{workdir}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    minimal-responses yes;
    querylog no;
}};
controls {{ }};
logging {{ category default {{ null; }}; category queries {{ null; }}; }};
zone "{ZONE}" {{ type primary; file "{zone}"; }};
"""
    )
    return conf


# ECS option for 172.16.5.0/24 (eu): family 1, source 24, scope 0, address bytes ac 10 05.
ECS_OPTION = "8:00011800ac1005"


def _dnsperf(tools: dict[str, str], port: int, queries: Path, seconds: float, extra: list[str]) -> str:
    argv = [
        "taskset", "-c", LOAD_CPUS, *priority_prefix(), tools["dnsperf"],
        "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
        "-l", f"{seconds:g}", "-t", f"{TIMEOUT_S:g}", "-c", "4", "-T", "1",
        "-E", ECS_OPTION, *extra,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if done.returncode != 0:
        raise HarnessError(f"dnsperf failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def _parse_summary(text: str) -> dict[str, float]:
    def number(pattern: str) -> float:
        match = re.search(pattern, text)
        if not match:
            raise HarnessError(f"dnsperf output lacks {pattern!r}:\n{text[-800:]}")
        return float(match.group(1))

    return {
        "sent": number(r"Queries sent:\s+(\d+)"),
        "completed": number(r"Queries completed:\s+(\d+)"),
        "lost": number(r"Queries lost:\s+(\d+)"),
        "qps": number(r"Queries per second:\s+([\d.]+)"),
        "avg_latency_ms": number(r"Average Latency \(s\):\s+([\d.]+)") * 1000,
    }


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _fixed_rate(tools: dict[str, str], port: int, queries: Path, seconds: float, rate: float) -> dict:
    text = _dnsperf(tools, port, queries, seconds, ["-Q", str(int(rate)), "-v"])
    summary = _parse_summary(text)
    # Verbose lines: "> NOERROR site3.bench.example A 0.000123"
    latencies = [float(line.split()[-1]) * 1000 for line in text.splitlines() if line.startswith("> ")]
    latencies += [TIMEOUT_S * 1000] * int(summary["lost"])
    return {
        **summary,
        "latency_ms": {"p50": _percentile(latencies, 0.5), "p99": _percentile(latencies, 0.99)},
        "samples": len(latencies),
    }


def _start(ctx: Context, name: str, tools: dict[str, str], paths: dict[str, Path]) -> tuple[int, Proc]:
    """Start ``name`` pinned to the proxy core; return its port once it answers."""
    port = free_port()
    if name == "redirector":
        admin = free_port()
        argv = [
            tools["redirector"], "--directory", str(paths["directory"]),
            "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
            "--threads", "1", "--answer-count", str(FRONTENDS),
        ]  # fmt: skip
        proc = ctx.group.start(name, argv, PROXY_CPUS, env={"RUST_LOG": "warn"})
    else:
        conf = _named_config(ctx.workdir, paths["zone"], port)
        proc = ctx.group.start(name, [tools["named"], "-g", "-4", "-n", "1", "-U", "1", "-c", str(conf)], PROXY_CPUS)
    # Ready when a query is answered.
    for _ in range(200):
        proc.check_alive()
        probe = subprocess.run(
            [tools["dnsperf"], "-s", "127.0.0.1", "-p", str(port), "-n", "1", "-t", "0.2"],
            input=f"site0.{ZONE} A\n", capture_output=True, text=True, check=False,
        )  # fmt: skip
        if re.search(r"Queries completed:\s+1 ", probe.stdout):
            return port, proc
    raise HarnessError(f"{name} did not answer on port {port}; log:\n{proc.log_tail()}")


def _round(ctx: Context, plan: Plan, tools: dict[str, str], paths: dict[str, Path], index: int) -> dict:
    order = SERVERS[index % 2 :] + SERVERS[: index % 2]
    max_rate: dict[str, dict] = {}
    ports: dict[str, int] = {}
    procs: dict[str, Proc] = {}
    for name in SERVERS:
        ports[name], procs[name] = _start(ctx, name, tools, paths)
    try:
        for name in order:
            _dnsperf(tools, ports[name], paths["queries"], plan.warmup_s, ["-q", str(plan.outstanding)])
            meter = CpuMeter({"server": procs[name].pid})
            meter.start()
            text = _dnsperf(tools, ports[name], paths["queries"], plan.measure_s, ["-q", str(plan.outstanding)])
            summary = _parse_summary(text)
            cpu = meter.stop()
            summary["cpu"] = cpu
            summary["server_cpu_us_per_query"] = cpu["server_cpu"] * 1e6 / max(summary["qps"], 1.0)
            max_rate[name] = summary
        rate = FIXED_RATE_SHARE * max_rate["bind"]["qps"]
        fixed = {name: _fixed_rate(tools, ports[name], paths["queries"], plan.fixed_rate_s, rate) for name in order}
    finally:
        for name in SERVERS:
            ctx.group.stop(procs[name])
    return {
        "order": list(order),
        "max_rate": max_rate,
        "fixed_rate_qps": rate,
        "fixed_rate": fixed,
        "ratios": {
            "qps_vs_bind": max_rate["redirector"]["qps"] / max_rate["bind"]["qps"],
            "cpu_per_query_vs_bind": max_rate["redirector"]["server_cpu_us_per_query"]
            / max_rate["bind"]["server_cpu_us_per_query"],
            "p99_vs_bind": fixed["redirector"]["latency_ms"]["p99"] / fixed["bind"]["latency_ms"]["p99"],
        },
    }


def run(ctx: Context) -> Outcome:
    """Run every round and summarise."""
    plan = QUICK if ctx.quick else FULL
    tools = _tools(REPO)
    paths = _write_inputs(ctx.workdir)
    rounds = [_round(ctx, plan, tools, paths, r) for r in range(plan.rounds)]
    qps = [r["ratios"]["qps_vs_bind"] for r in rounds]
    p99 = [r["ratios"]["p99_vs_bind"] for r in rounds]
    cpu = [r["ratios"]["cpu_per_query_vs_bind"] for r in rounds]
    warnings = []
    for r in rounds:
        for name, m in r["max_rate"].items():
            if m["lost"] > 0.001 * max(m["sent"], 1):
                warnings.append(f"{name} lost {m['lost']:.0f} of {m['sent']:.0f} queries at maximum rate")
            if m["cpu"]["server_cpu"] < 0.9:
                warnings.append(
                    f"{name} used {m['cpu']['server_cpu']:.2f} of its core at maximum rate: "
                    "dnsperf, not the server, may have been the bottleneck"
                )
    # CPU time per query is the figure least disturbed by a load generator that cannot
    # saturate the server, or by other work on the machine: reported beside the goals.
    result = {
        "cpu_per_query_ratio_vs_bind": spread(cpu)["median"],
        "qps_ratio_vs_bind": spread(qps)["median"],
        "p99_ratio_vs_bind": spread(p99)["median"],
    }
    plot = [
        {
            "title": "maximum rate (queries/s, median of rounds)",
            "ylabel": "queries/s",
            "log": False,
            "groups": {
                name: {"max qps": spread([r["max_rate"][name]["qps"] for r in rounds])["median"]} for name in SERVERS
            },
        },
        {
            "title": f"p99 at {FIXED_RATE_SHARE:.0%} of BIND's maximum rate (ms)",
            "ylabel": "ms",
            "log": False,
            "groups": {
                name: {"p99": spread([r["fixed_rate"][name]["latency_ms"]["p99"] for r in rounds])["median"]}
                for name in SERVERS
            },
        },
    ]
    return Outcome(
        data={
            "plan": asdict(plan),
            "zone": f"{SITES} hostnames × {FRONTENDS} front-ends (2 regions), A queries with ECS 172.16.5.0/24",
            "servers": {"redirector": tools["redirector"], "bind": tools["named"]},
            "rounds": rounds,
            "summary": {
                "qps_ratio_vs_bind": spread(qps),
                "p99_ratio_vs_bind": spread(p99),
                "cpu_per_query_ratio_vs_bind": spread(cpu),
            },
            "plot": plot,
        },
        result=result,
        warnings=warnings,
    )
