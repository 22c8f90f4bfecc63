"""``cache-hit``: hot objects answered from the cache by Causeway, nginx ``proxy_cache`` and Varnish.

One nginx origin (one worker, on the load core) serves a hot set of static objects —
:data:`SMALL_OBJECTS` of 4 KiB and :data:`LARGE_OBJECTS` of 64 KiB — with
``Cache-Control: public, max-age=3600``, an ``ETag`` and ``Last-Modified``, and logs every
request it answers (that log is how the scenario counts what reached the origin). Three
caching proxies stand in front of it, each pinned to the proxy core with one worker:

* Causeway ``gateway --workers 1`` (a current-thread runtime) with ``spec.cache.enabled``;
* nginx, ``worker_processes 1``, ``proxy_cache`` on a disk zone (``use_temp_path=off``,
  ``proxy_cache_lock on``) with ``open_file_cache`` and ``sendfile off`` (its cheapest way to
  serve small hits, see :func:`_nginx_cache_conf`) and upstream keep-alive;
* Varnish (``varnishd``, one thread pool, ``-s malloc``, per-request shared-memory log
  records masked like the others' access logs), its manager, child and every worker thread
  under the same ``taskset``.

Each round starts the three fresh, then for each: every object is fetched once (the fill)
and then again until the proxy says it answered from its cache (Causeway ``Cache-Status:
causeway; hit``, nginx ``X-Cache-Status: HIT``, Varnish ``X-Cache: HIT`` set from
``obj.hits`` in VCL), with the body compared byte for byte with the origin's file. From then
on the origin's request count must not move: it is read around every load run and once
more after a final hit check, and any growth fails the run — a proxy that does not cache is
never reported. In an order rotated every round:

1. **maximum rate** — closed-loop load over the hot set (oha ``--urls-from-file``, each
   request a uniformly random object, so 1 in 26 is a 64 KiB one) after a short warm-up;
   the proxy's CPU use gives the CPU time per request, the figure least disturbed by other
   load on the machine;
2. **p99 at a fixed rate** of :data:`FIXED_RATE_SHARE` of the slowest proxy's maximum rate
   of the same round (a rate all three sustain), latency-corrected, 1 s client timeout.

Ratios are taken within each round and summarised as min/median/max over rounds; RESULT
carries the medians. A readable table is printed before the RESULT line.
"""

from __future__ import annotations

import http.client
import math
import os
import shutil
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import install
from ..load import (
    ClosedLoopResult,
    FixedRateResult,
    Load,
    _count_2xx,
    _read_rows,
    _read_summary,
    _real_errors,
    _timeline,
    oha_argv,
    percentiles_ms,
    unsent_warning,
)
from ..peers import (
    CONNECT_TIMEOUT_S,
    HOSTNAME,
    RESPONSE_TIMEOUT_S,
    UPSTREAM_KEEPALIVE,
    Endpoint,
    _nginx_main,
)
from ..procs import CpuMeter, HarnessError, Proc, free_port, wait_http_ok
from ..report import spread
from . import LOAD_CPUS, PROXY_CPUS, Context, Outcome
from .throughput import _max_rate_warnings

NEEDS = ("gateway",)
CAUSEWAY, NGINX, VARNISH = "causeway", "nginx", "varnish"
PROXIES = (CAUSEWAY, NGINX, VARNISH)
SMALL_OBJECTS, SMALL_BYTES = 100, 4 * 1024
LARGE_OBJECTS, LARGE_BYTES = 4, 64 * 1024
CACHE_CONTROL = "public, max-age=3600"
CACHE_BYTES = 256 * 1024 * 1024
FIXED_RATE_SHARE = 0.5
CLIENT_TIMEOUT_S = 1.0
# Varnish logs every request into shared memory (VSL, what varnishncsa reads); the other
# proxies run without access logs, so these per-request records are masked (17 µs per hit
# instead of 21 µs on this workload).
VSL_PER_REQUEST = (
    "Begin", "End", "Link", "SessOpen", "SessClose", "ReqStart", "ReqMethod", "ReqURL", "ReqProtocol",
    "ReqHeader", "ReqUnset", "RespProtocol", "RespStatus", "RespReason", "RespHeader", "RespUnset",
    "VCL_call", "VCL_return", "VCL_use", "Hit", "Timestamp", "ReqAcct", "Storage", "Length", "Filters",
)  # fmt: skip
HIT_DEADLINE_S = 10.0  # how long a proxy may take to start answering an object from its cache


@dataclass(frozen=True)
class Plan:
    """How long and how often to measure."""

    rounds: int
    warmup_s: float
    measure_s: float
    connections: int


QUICK = Plan(rounds=1, warmup_s=1.0, measure_s=4.0, connections=64)
FULL = Plan(rounds=5, warmup_s=2.0, measure_s=10.0, connections=64)


@dataclass(frozen=True)
class Origin:
    """The static origin: its address, its objects (path → bytes) and its request log."""

    endpoint: Endpoint
    proc: Proc
    objects: dict[str, bytes]
    access_log: Path

    def requests(self) -> int:
        """How many requests the origin has answered so far (one log line each)."""
        try:
            with open(self.access_log, "rb") as log:
                return sum(1 for _ in log)
        except FileNotFoundError:
            return 0


@dataclass
class Proxy:
    """One caching proxy under test."""

    label: str
    endpoint: Endpoint
    proc: Proc
    urls: Path  # oha's --urls-from-file list of the hot set through this proxy


# --------------------------------------------------------------------------- the run


def run(ctx: Context) -> Outcome:
    """Run every round and summarise."""
    plan = QUICK if ctx.quick else FULL
    varnishd = _ensure_varnish()
    # nginx's workers and Varnish's child drop root: they must reach files in the work tree.
    os.chmod(ctx.workdir, 0o711)
    origin = _start_origin(ctx)
    warnings: list[str] = []
    rounds = [_round(ctx, plan, origin, varnishd, r, warnings) for r in range(plan.rounds)]

    ratios = {
        "hit_rps_ratio_vs_nginx": [r["ratios"]["rps_vs_nginx"] for r in rounds],
        "hit_rps_ratio_vs_varnish": [r["ratios"]["rps_vs_varnish"] for r in rounds],
        "p99_ratio_vs_nginx": [r["ratios"]["p99_vs_nginx"] for r in rounds],
    }
    per_proxy = {
        label: {
            "max_rps": spread([r["max_rate"][label]["ok_rps"] for r in rounds]),
            "fixed_rate_p99_ms": spread([r["fixed_rate"][label]["latency_ms"]["p99"] for r in rounds]),
            "fixed_rate_p50_ms": spread([r["fixed_rate"][label]["latency_ms"]["p50"] for r in rounds]),
            "proxy_cpu_at_max_rate": spread([r["max_rate"][label]["cpu"]["proxy_cpu"] for r in rounds]),
            "proxy_cpu_us_per_request": spread([r["max_rate"][label]["proxy_cpu_us_per_request"] for r in rounds]),
        }
        for label in PROXIES
    }
    summary = {"ratios": {k: spread(v) for k, v in ratios.items()}, "per_proxy": per_proxy}
    data = {
        "plan": asdict(plan),
        "proxies": list(PROXIES),
        "objects": f"{SMALL_OBJECTS} × {SMALL_BYTES} B + {LARGE_OBJECTS} × {LARGE_BYTES} B, Cache-Control: "
        f"{CACHE_CONTROL}, each request a uniformly random object",
        "origin": f"nginx static files (1 worker, core {LOAD_CPUS}), every request logged and counted",
        "fixed_rate": f"{FIXED_RATE_SHARE:.0%} of the slowest proxy's maximum rate in the same round",
        "hit_checks": "every object answered from the cache before load; origin request count unchanged "
        "over every load run and a final hit check",
        "summary": summary,
        "rounds": rounds,
        "plot": _plot(per_proxy),
    }
    result = {k: round(v["median"], 4) for k, v in summary["ratios"].items()}
    print(_table(plan, rounds, per_proxy, summary["ratios"], ctx.quick), flush=True)
    return Outcome(data=data, result=result, warnings=warnings)


def _round(ctx: Context, plan: Plan, origin: Origin, varnishd: str, index: int, warnings: list[str]) -> dict:
    """One round: start and fill the proxies, measure maximum rates, then fixed-rate latency."""
    order = PROXIES[index % len(PROXIES) :] + PROXIES[: index % len(PROXIES)]
    proxies: dict[str, Proxy] = {}
    try:
        for label in order:
            proxies[label] = _start_proxy(ctx, label, origin, varnishd, index)
            _fill_and_check(proxies[label], origin)
        before_load = origin.requests()

        max_rate = {}
        for label in order:
            proxy = proxies[label]
            tag = f"r{index + 1}-{label}"
            warm = Load(duration_s=plan.warmup_s, connections=plan.connections)
            _closed_loop(ctx, proxy, origin, warm, f"{tag}-warmup")
            meter = CpuMeter({"proxy": proxy.proc.pid})
            meter.start()
            load = Load(duration_s=plan.measure_s, connections=plan.connections)
            res = _closed_loop(ctx, proxy, origin, load, f"{tag}-max")
            cpu = meter.stop()
            proxy.proc.check_alive()
            per_request_us = round(cpu["proxy_cpu"] / max(res.ok_rps, 1.0) * 1e6, 2)
            max_rate[label] = {**asdict(res), "cpu": cpu, "proxy_cpu_us_per_request": per_request_us}
            warnings.extend(f"round {index + 1}: {w}" for w in _max_rate_warnings(label, res, cpu))

        slowest = min(max_rate[label]["ok_rps"] for label in PROXIES)
        rate = round(FIXED_RATE_SHARE * slowest, 1)
        fixed = {}
        for label in order:
            proxy = proxies[label]
            tag = f"r{index + 1}-{label}"
            load = Load(duration_s=plan.measure_s, connections=plan.connections, rate=rate, timeout_s=CLIENT_TIMEOUT_S)
            res = _fixed_rate(ctx, proxy, origin, load, f"{tag}-fixed")
            proxy.proc.check_alive()
            warning = unsent_warning(label, res)
            if warning:
                warnings.append(f"round {index + 1}: {warning}")
            entry = res.to_json()
            entry.pop("timeline")
            fixed[label] = entry

        for label in order:
            _check_hits(proxies[label], origin, retry=False)
        grew = origin.requests() - before_load
        if grew:
            raise HarnessError(f"round {index + 1}: the origin answered {grew} requests after every proxy was warm")
    finally:
        for proxy in proxies.values():
            ctx.group.stop(proxy.proc)

    c, n, v = CAUSEWAY, NGINX, VARNISH
    return {
        "round": index + 1,
        "order": list(order),
        "fixed_rate_rps": rate,
        "max_rate": max_rate,
        "fixed_rate": fixed,
        "origin_requests_during_load": 0,
        "ratios": {
            "rps_vs_nginx": round(max_rate[c]["ok_rps"] / max_rate[n]["ok_rps"], 4),
            "rps_vs_varnish": round(max_rate[c]["ok_rps"] / max_rate[v]["ok_rps"], 4),
            "p99_vs_nginx": round(fixed[c]["latency_ms"]["p99"] / fixed[n]["latency_ms"]["p99"], 4),
        },
    }


# --------------------------------------------------------------------------- load over the hot set


def _oha(ctx: Context, proxy: Proxy, load: Load, json_out: Path, db_out: Path | None) -> list[str]:
    """oha's command line for ``load`` over the proxy's hot-set URL list (random object per request)."""
    argv = oha_argv(ctx.tools.oha, proxy.endpoint, load, json_out, db_out)
    argv[argv.index(proxy.endpoint.url)] = str(proxy.urls)
    argv.insert(1, "--urls-from-file")
    return argv


def _unchanged_origin(origin: Origin, label: str, name: str, before: int) -> None:
    """Fail loudly if the origin answered anything during a load run that must be all hits."""
    grew = origin.requests() - before
    if grew:
        raise HarnessError(
            f"{label} is not answering from its cache: the origin answered {grew} requests during {name}; "
            "refusing to report a proxy that does not cache"
        )


def _closed_loop(ctx: Context, proxy: Proxy, origin: Origin, load: Load, name: str) -> ClosedLoopResult:
    """Closed-loop load; the rate of 2xx answers (the same counting as ``load.run_closed_loop``)."""
    json_out = ctx.workdir / f"{name}.json"
    before = origin.requests()
    ctx.group.run(name, _oha(ctx, proxy, load, json_out, None), LOAD_CPUS, timeout_s=load.duration_s + 30)
    _unchanged_origin(origin, proxy.label, name, before)
    summary = _read_summary(json_out)
    ok = _count_2xx(summary["statusCodeDistribution"])
    errors = _real_errors(summary["errorDistribution"])
    total = sum(summary["statusCodeDistribution"].values()) + sum(errors.values())
    duration = summary["summary"]["total"]
    return ClosedLoopResult(
        ok_rps=round(ok / duration, 1),
        ok=ok,
        failed=total - ok,
        duration_s=round(duration, 3),
        status=summary["statusCodeDistribution"],
        errors=errors,
    )


def _fixed_rate(ctx: Context, proxy: Proxy, origin: Origin, load: Load, name: str) -> FixedRateResult:
    """Fixed-rate load with latency correction (the same counting as ``load.run_fixed_rate``)."""
    assert load.rate is not None and load.timeout_s is not None
    json_out = ctx.workdir / f"{name}.json"
    db_out = ctx.workdir / f"{name}.sqlite"
    db_out.unlink(missing_ok=True)
    before = origin.requests()
    timeout = load.duration_s + load.timeout_s + 60
    ctx.group.run(name, _oha(ctx, proxy, load, json_out, db_out), LOAD_CPUS, timeout_s=timeout)
    _unchanged_origin(origin, proxy.label, name, before)
    summary = _read_summary(json_out)
    rows = _read_rows(db_out)
    errors = _real_errors(summary["errorDistribution"])
    scheduled = math.floor(load.rate * load.duration_s)
    sent = len(rows) + sum(errors.values())
    ok_latencies = [lat for _, lat, status in rows if 200 <= status < 300 and lat <= load.timeout_s]
    failed = sent - len(ok_latencies)
    return FixedRateResult(
        rate=load.rate,
        duration_s=load.duration_s,
        timeout_s=load.timeout_s,
        scheduled=scheduled,
        ok=len(ok_latencies),
        failed=failed,
        unsent=max(0, scheduled - sent),
        success_rate=round(len(ok_latencies) / max(sent, 1), 6),
        latency_ms=percentiles_ms(ok_latencies, failed, load.timeout_s),
        status=summary["statusCodeDistribution"],
        errors=errors,
        timeline=_timeline(rows, load, sum(errors.values())),
    )


# --------------------------------------------------------------------------- hit checks


def _is_hit(label: str, headers: http.client.HTTPMessage) -> bool:
    """Whether the proxy says it answered from its cache."""
    if label == CAUSEWAY:
        # RFC 9211: "causeway; hit; ttl=3599" — the parameters after the cache's name.
        params = [p.strip().split("=", 1)[0] for p in (headers.get("Cache-Status") or "").split(";")[1:]]
        return "hit" in params
    if label == NGINX:
        return headers.get("X-Cache-Status") == "HIT"
    return headers.get("X-Cache") == "HIT"


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn.request("GET", path, headers={"Host": HOSTNAME})
    resp = conn.getresponse()
    return resp.status, resp.headers, resp.read()


def _check_hits(proxy: Proxy, origin: Origin, retry: bool) -> None:
    """Every object through ``proxy`` is the origin's and comes from the proxy's cache.

    With ``retry``, an object not yet a hit (a fill still being stored) is asked again until
    :data:`HIT_DEADLINE_S`; without, a single miss fails the run.
    """
    deadline = time.monotonic() + HIT_DEADLINE_S
    conn = http.client.HTTPConnection("127.0.0.1", proxy.endpoint.port, timeout=5)
    try:
        for path, body in origin.objects.items():
            while True:
                status, headers, got = _get(conn, path)
                if status != 200 or got != body:
                    raise HarnessError(
                        f"{proxy.label} answered {path} with status {status} and {len(got)} bytes "
                        f"(expected 200 and the origin's {len(body)} bytes)"
                    )
                if _is_hit(proxy.label, headers):
                    break
                if not retry or time.monotonic() > deadline:
                    shown = {
                        k: v for k, v in headers.items() if "cache" in k.lower() or k.lower() in ("age", "x-varnish")
                    }
                    raise HarnessError(f"{proxy.label} did not answer {path} from its cache; its headers: {shown}")
                time.sleep(0.02)
    finally:
        conn.close()


def _fill_and_check(proxy: Proxy, origin: Origin) -> None:
    """Fetch every object once through ``proxy`` (the fill), then check every one is a hit."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.endpoint.port, timeout=5)
    try:
        for path in origin.objects:
            status, _, _ = _get(conn, path)
            if status != 200:
                raise HarnessError(f"{proxy.label} answered the fill of {path} with status {status}")
    finally:
        conn.close()
    _check_hits(proxy, origin, retry=True)


# --------------------------------------------------------------------------- origin and proxies


def _ensure_varnish() -> str:
    """varnishd, installed from Debian when missing (services kept from starting, as for nginx)."""
    found = shutil.which("varnishd", path=install.SBIN_PATH)
    if not found:
        install._apt_install(["varnish"])
        found = shutil.which("varnishd", path=install.SBIN_PATH)
    if not found:
        raise HarnessError("varnishd is still missing after installing Debian's varnish package")
    return found


def _objects() -> dict[str, bytes]:
    """The hot set: path → body, deterministic so every run serves the same bytes."""
    objects = {}
    for i in range(SMALL_OBJECTS):
        objects[f"/obj/s{i:03d}.bin"] = _pattern(i, SMALL_BYTES)
    for i in range(LARGE_OBJECTS):
        objects[f"/obj/l{i:03d}.bin"] = _pattern(1000 + i, LARGE_BYTES)
    return objects


def _pattern(seed: int, size: int) -> bytes:
    line = f"object {seed:04d} ".encode()
    return (line * (size // len(line) + 1))[:size]


def _start_origin(ctx: Context) -> Origin:
    """The static nginx origin with the hot set, every request logged."""
    root = ctx.workdir / "www"
    objects = _objects()
    for path, body in objects.items():
        file = root / path.lstrip("/")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(body)
    for directory in (root, root / "obj"):
        directory.chmod(0o755)
    ep = Endpoint("origin", free_port())
    conf_dir = ctx.workdir / "origin"
    access_log = conf_dir / "access.log"
    conf = _nginx_main(
        conf_dir,
        f"""
        server {{
            listen {ep.addr} backlog=4096;
            access_log {access_log};
            root {root};
            location /obj/ {{ add_header Cache-Control "{CACHE_CONTROL}"; }}
        }}
        """,
    )
    proc = ctx.group.start("origin", [ctx.tools.nginx, "-c", str(conf), "-e", "stderr"], LOAD_CPUS)
    first = next(iter(objects))
    wait_http_ok(ep.url.rstrip("/") + first, HOSTNAME, proc)
    return Origin(ep, proc, objects, access_log)


def _start_proxy(ctx: Context, label: str, origin: Origin, varnishd: str, index: int) -> Proxy:
    """Start one caching proxy over ``origin`` on the proxy core; return once it answers."""
    name = f"r{index + 1}-{label}"
    ep = Endpoint(name, free_port())
    conf_dir = ctx.workdir / name
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf_dir.chmod(0o755)
    if label == CAUSEWAY:
        admin = free_port()
        site = _causeway_site(conf_dir, origin.endpoint)
        argv = [
            ctx.tools.causeway, "gateway",
            "--listen", ep.addr,
            "--admin-listen", f"127.0.0.1:{admin}",
            "--workers", "1",
            str(site),
        ]  # fmt: skip
    elif label == NGINX:
        argv = [ctx.tools.nginx, "-c", str(_nginx_cache_conf(conf_dir, ep, origin.endpoint)), "-e", "stderr"]
    else:
        vcl = _varnish_vcl(conf_dir, origin.endpoint)
        argv = [
            varnishd, "-F",
            "-n", str(conf_dir / "varnish"),
            "-a", ep.addr,
            "-f", str(vcl),
            "-s", f"malloc,{CACHE_BYTES // (1024 * 1024)}m",
            "-T", "none",
            "-p", "thread_pools=1",
            "-p", "vsl_mask=" + ",".join(f"-{tag}" for tag in VSL_PER_REQUEST),
        ]  # fmt: skip
    proc = ctx.group.start(name, argv, PROXY_CPUS)
    if label == CAUSEWAY:
        wait_http_ok(f"http://127.0.0.1:{admin}/healthz", None, proc)
    wait_http_ok(ep.url.rstrip("/") + next(iter(origin.objects)), HOSTNAME, proc, timeout_s=30.0)
    urls = conf_dir / "urls.txt"
    urls.write_text("".join(f"http://{ep.addr}{path}\n" for path in origin.objects))
    return Proxy(label, ep, proc, urls)


def _causeway_site(conf_dir: Path, origin: Endpoint) -> Path:
    """A Site for ``causeway gateway`` with its cache on."""
    lines = [
        "apiVersion: causeway.dev/v1alpha1",
        "kind: Site",
        "metadata: { name: bench }",
        "spec:",
        f"  hostnames: [{HOSTNAME}]",
        "  origins:",
        f'    - {{ name: origin, url: "http://{origin.addr}", maxInFlight: 1000 }}',
        f"  limits: {{ connectTimeout: {CONNECT_TIMEOUT_S}s, responseTimeout: {RESPONSE_TIMEOUT_S}s }}",
        f"  cache: {{ enabled: true, maxSizeBytes: {CACHE_BYTES} }}",
    ]
    site = conf_dir / "site.yaml"
    site.write_text("\n".join(lines) + "\n")
    return site


def _nginx_cache_conf(conf_dir: Path, ep: Endpoint, origin: Endpoint) -> Path:
    """nginx with ``proxy_cache``: one worker, upstream keep-alive, hits served its fastest way.

    Tried on this workload (CPU time per hit): ``open_file_cache`` (which ``proxy_cache``
    uses for its cache files) saves the open/fstat/close of every hit; without ``sendfile``
    a small hit goes out in one ``writev`` with its head; ``tcp_nopush`` only adds two
    ``setsockopt`` calls per answer. 15.9 µs per hit with ``sendfile``+``tcp_nopush`` and no
    open-file cache, 9.5 µs as configured here.
    """
    return _nginx_main(
        conf_dir,
        f"""
        sendfile off;
        open_file_cache max=1000 inactive=60s;
        proxy_cache_path {conf_dir}/cache levels=1:2 keys_zone=hot:10m max_size={CACHE_BYTES}
                         inactive=60m use_temp_path=off;
        upstream origin {{
            server {origin.addr};
            keepalive {UPSTREAM_KEEPALIVE};
            keepalive_requests 1000000;
        }}
        server {{
            listen {ep.addr} backlog=4096;
            location / {{
                proxy_pass http://origin;
                proxy_http_version 1.1;
                proxy_set_header Connection "";
                proxy_set_header Host $host;
                proxy_connect_timeout {CONNECT_TIMEOUT_S}s;
                proxy_read_timeout {RESPONSE_TIMEOUT_S}s;
                proxy_cache hot;
                proxy_cache_lock on;
                add_header X-Cache-Status $upstream_cache_status always;
            }}
        }}
        """,
    )


def _varnish_vcl(conf_dir: Path, origin: Endpoint) -> Path:
    """Varnish's VCL: the origin with the same timeouts, and a hit/miss header from ``obj.hits``."""
    vcl = conf_dir / "bench.vcl"
    vcl.write_text(
        textwrap.dedent(
            f"""\
            vcl 4.1;
            backend origin {{
                .host = "127.0.0.1";
                .port = "{origin.port}";
                .connect_timeout = {CONNECT_TIMEOUT_S}s;
                .first_byte_timeout = {RESPONSE_TIMEOUT_S}s;
                .between_bytes_timeout = {RESPONSE_TIMEOUT_S}s;
            }}
            sub vcl_deliver {{
                if (obj.hits > 0) {{
                    set resp.http.X-Cache = "HIT";
                }} else {{
                    set resp.http.X-Cache = "MISS";
                }}
            }}
            """
        )
    )
    vcl.chmod(0o644)
    return vcl


# --------------------------------------------------------------------------- report


def _plot(per_proxy: dict) -> list[dict]:
    """Panels for ``report._plot_panels``: medians per proxy."""

    def groups(key: str) -> dict:
        return {label: {"median": per_proxy[label][key]["median"]} for label in PROXIES}

    return [
        {"title": "maximum hit rate (closed loop)", "ylabel": "requests/s (2xx)", "groups": groups("max_rps")},
        {
            "title": f"p99 at a fixed rate ({FIXED_RATE_SHARE:.0%} of the slowest's maximum)",
            "ylabel": "p99 latency (ms)",
            "groups": groups("fixed_rate_p99_ms"),
        },
        {
            "title": "proxy CPU time per request at maximum rate",
            "ylabel": "CPU µs per request",
            "groups": groups("proxy_cpu_us_per_request"),
        },
    ]


def _table(plan: Plan, rounds: list[dict], per_proxy: dict, ratios: dict, quick: bool) -> str:
    """A readable summary: medians with min–max over rounds."""

    def cell(stats: dict, fmt: str) -> str:
        if stats["n"] == 1:
            return format(stats["median"], fmt)
        return f"{format(stats['median'], fmt)} [{format(stats['min'], fmt)}–{format(stats['max'], fmt)}]"

    rates = [r["fixed_rate_rps"] for r in rounds]
    head = (
        f"cache-hit ({'quick' if quick else 'full'}: {plan.rounds} round(s) of {plan.measure_s:g} s, "
        f"{plan.connections} connections; median [min–max]); fixed rate {min(rates):,.0f}–{max(rates):,.0f} req/s"
    )
    cols = ("proxy", "max rps (hits)", "p99 ms @ fixed", "p50 ms @ fixed", "CPU µs/req", "proxy CPU")
    rows = [
        (
            label,
            cell(per_proxy[label]["max_rps"], ",.0f"),
            cell(per_proxy[label]["fixed_rate_p99_ms"], ".3f"),
            cell(per_proxy[label]["fixed_rate_p50_ms"], ".3f"),
            cell(per_proxy[label]["proxy_cpu_us_per_request"], ".1f"),
            cell(per_proxy[label]["proxy_cpu_at_max_rate"], ".2f"),
        )
        for label in PROXIES
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *rows, strict=True)]
    lines = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    goals = {"hit_rps_ratio_vs_nginx": "≥ 1.0", "hit_rps_ratio_vs_varnish": "≥ 1.0", "p99_ratio_vs_nginx": "≤ 1.0"}
    lines.append("ratios (per round, then median [min–max]): " + "; ".join(
        f"{k} {cell(v, '.4f')} (goal {goals[k]})" for k, v in ratios.items()
    ))  # fmt: skip
    lines.append("origin requests during load: 0 (checked around every load run)")
    return "\n".join(lines)
