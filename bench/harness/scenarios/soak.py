"""``soak``: a two-tier Site under steady mixed traffic and periodic faults; does anything leak?

On loopback: two Causeway demo origins ← ``causeway backend`` ←TMP link (UDP, mutual TLS
from ``causeway link-certs``)← ``causeway frontend`` (one worker, pinned to the proxy core)
← oha. Traffic: :data:`RATE` requests/s, fixed rate, 2 s client timeout, each request a
random path of :data:`PATHS` (classes 0, 2 and 4, a cacheable static path, a 16 KiB body),
sent as back-to-back oha runs of :data:`SEGMENT_S` (so every failure oha reports without a
time still falls in a known span).

After the warm-up, traffic pauses for :data:`QUIET_S` and every Causeway process's file
descriptors are counted; then faults come in turn every ``fault_every_s``:

* ``origin-kill`` — origin 1 gets SIGKILL and is started again on its port :data:`DOWN_S` later;
* ``origin-5xx`` — origin 2 is replaced on its port by an nginx answering 503 for :data:`DOWN_S`;
* ``backend-restart`` — the back-end gets SIGTERM (it drains) and is started again at once.

Every request's outcome is counted. A failure (non-2xx, timeout, connection error) of a
request that was in flight (scheduled start to answer) at some moment of a fault's window —
from the fault's start to :data:`GRACE_S` after its end (the replacement answering) — is
*explained* (allowing :data:`START_SLACK_S` for oha's start-up); any other is *unexplained*.
Failures oha reports without a time are explained when their oha run overlaps a window.

RSS (``VmRSS``) of every Causeway process is sampled every ``sample_s``. At the end traffic
stops, and after :data:`QUIET_S` the descriptors are counted again. ``fd_leak`` is the
difference, over the front-end and the back-end, not counting sockets to the origins (the
back-end's idle keep-alive pool, bounded and closed after 90 s idle); the back-end compared
is the incarnation of the last restart. ``rss_growth_pct_after_warmup`` is the largest growth,
over the front-end (which lives through the whole run) and each back-end incarnation that
lived a warm-up past its own warm-up, from its RSS level just after warm-up to its level at
the end (each level the median of :data:`LEVEL_S` of samples).
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..load import FixedRateResult, Load, StartedFixedRate, start_fixed_rate, urls_file
from ..peers import HOSTNAME, Endpoint, _nginx_main, start_causeway_origin, wait_origins
from ..procs import HarnessError, Proc, free_port, wait_http_ok
from . import LOAD_CPUS, PROXY_CPUS, Context, Outcome

NEEDS = ("frontend", "backend", "origin", "link-certs")
RATE = 150.0
CLIENT_TIMEOUT_S = 2.0
SEGMENT_S = 15.0
QUIET_S = 3.0
DOWN_S = 10.0
GRACE_S = 5.0
# oha's time 0 comes a little after the harness notes the start of its run (process start-up),
# so a request's start as placed here may be early by that much.
START_SLACK_S = 0.25
LEVEL_S = 30.0  # RSS levels are medians over this long, so one sample's noise does not count
ORIGIN_DELAY_S = 0.005
PATHS = ["/api/items"] * 5 + ["/catalogue/page"] * 3 + ["/checkout/pay", "/static/app.css", "/api/blob?bytes=16384"]
FAULTS = ("origin-kill", "origin-5xx", "backend-restart")


@dataclass(frozen=True)
class Plan:
    """Run length, warm-up, fault spacing and sampling."""

    duration_s: float
    warmup_s: float
    fault_every_s: float
    sample_s: float


QUICK = Plan(duration_s=300.0, warmup_s=90.0, fault_every_s=50.0, sample_s=2.0)
FULL = Plan(duration_s=1800.0, warmup_s=120.0, fault_every_s=120.0, sample_s=5.0)


@dataclass
class Incarnation:
    """One run of a Causeway process: its role, pid, start and RSS samples."""

    role: str
    pid: int
    started_s: float
    rss_kib: list[tuple[float, int]] = field(default_factory=list)


@dataclass
class Fault:
    """A fault's kind and window (seconds from the run's start)."""

    kind: str
    start_s: float
    end_s: float = 0.0

    def explains(self, start_s: float, end_s: float) -> bool:
        """Whether a request in flight from ``start_s`` to ``end_s`` met the fault's window."""
        return start_s <= self.end_s + GRACE_S and end_s + START_SLACK_S >= self.start_s


class Site:
    """The running two-tier Site: origins, back-end, front-end, and the ways to break them."""

    def __init__(self, ctx: Context, t0: float) -> None:
        self.ctx = ctx
        self.t0 = t0
        self.certs = ctx.workdir / "link-certs"
        ctx.group.run("link-certs", [ctx.tools.causeway, "link-certs", "--out", str(self.certs)], LOAD_CPUS, 30)
        self.ports = [free_port() for _ in range(2)]
        self.origins = {i: self._start_origin(i) for i in range(2)}
        wait_origins([(ep, proc) for ep, proc in self.origins.values()])
        self.site = self._site_file()
        self.link_port = free_port()
        self.front = Endpoint("frontend", free_port())
        self.incarnations: list[Incarnation] = []
        self.lock = threading.Lock()
        self.backend = self._start_backend()
        self.frontend = self._start("frontend", [
            self.ctx.tools.causeway, "frontend", "--name", "front", "--workers", "1",
            "--listen", self.front.addr, "--admin-listen", f"127.0.0.1:{free_port()}",
            "--backend", f"127.0.0.1:{self.link_port}", *self._link_args("frontend"), str(self.site),
        ], PROXY_CPUS)  # fmt: skip
        wait_http_ok(self.front.url, HOSTNAME, self.frontend, timeout_s=30)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _start_origin(self, i: int) -> tuple[Endpoint, Proc]:
        name = f"origin{i + 1}-{time.monotonic_ns()}"
        return start_causeway_origin(
            self.ctx.group, self.ctx.tools, name, LOAD_CPUS, None, ORIGIN_DELAY_S, self.ports[i]
        )

    def _site_file(self) -> Path:
        lines = [
            "apiVersion: causeway.dev/v1alpha1",
            "kind: Site",
            "metadata: { name: soak }",
            "spec:",
            f"  hostnames: [{HOSTNAME}]",
            "  origins:",
            *(f'    - {{ name: origin{i + 1}, url: "http://127.0.0.1:{p}" }}' for i, p in enumerate(self.ports)),
            "  limits: { connectTimeout: 2s, responseTimeout: 5s }",
            "  priority:",
            "    defaultClass: 2",
            "    rules:",
            "      - { class: 0, match: { pathPrefix: /checkout } }",
            "      - { class: 4, match: { pathPrefix: /catalogue } }",
        ]
        path = self.ctx.workdir / "soak-site.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _link_args(self, role: str) -> list[str]:
        return [
            "--link-ca", str(self.certs / "ca.pem"),
            "--link-cert", str(self.certs / f"{role}.pem"),
            "--link-key", str(self.certs / f"{role}.key"),
        ]  # fmt: skip

    def _start(self, role: str, argv: list[str], cpus: str) -> Proc:
        proc = self.ctx.group.start(f"{role}-{time.monotonic_ns()}", argv, cpus)
        with self.lock:
            self.incarnations.append(Incarnation(role, proc.pid, self.now()))
        return proc

    def _start_backend(self) -> Proc:
        admin = free_port()
        proc = self._start("backend", [
            self.ctx.tools.causeway, "backend", "--name", "back",
            "--link-listen", f"127.0.0.1:{self.link_port}", "--admin-listen", f"127.0.0.1:{admin}",
            *self._link_args("backend"), str(self.site),
        ], LOAD_CPUS)  # fmt: skip
        wait_http_ok(f"http://127.0.0.1:{admin}/readyz", None, proc, timeout_s=30)
        return proc

    def live(self) -> list[Incarnation]:
        """The incarnations of the front-end and the current back-end."""
        with self.lock:
            return [i for i in self.incarnations if i.pid in (self.frontend.pid, self.backend.pid)]

    # ----------------------------------------------------------------------- faults

    def inject(self, kind: str) -> Fault:
        """Break something, wait until it is mended, and return the fault's window."""
        fault = Fault(kind, self.now())
        if kind == "origin-kill":
            _, proc = self.origins[0]
            os.killpg(proc.pid, signal.SIGKILL)
            self.ctx.group.stop(proc)
            time.sleep(DOWN_S)
            self.origins[0] = self._start_origin(0)
            wait_origins([self.origins[0]])
        elif kind == "origin-5xx":
            _, proc = self.origins[1]
            self.ctx.group.stop(proc)
            conf = _nginx_main(
                self.ctx.workdir / f"nginx-503-{time.monotonic_ns()}",
                f'server {{ listen 127.0.0.1:{self.ports[1]}; location / {{ return 503 "down\\n"; }} }}',
            )
            nginx = self.ctx.group.start(
                "nginx-503", [self.ctx.tools.nginx, "-c", str(conf), "-e", "stderr"], LOAD_CPUS
            )
            time.sleep(DOWN_S)
            nginx.check_alive()
            self.ctx.group.stop(nginx)
            self.origins[1] = self._start_origin(1)
            wait_origins([self.origins[1]])
        elif kind == "backend-restart":
            self.ctx.group.stop(self.backend)
            self.backend = self._start_backend()
        else:
            raise ValueError(kind)
        fault.end_s = self.now()
        return fault


# --------------------------------------------------------------------------- the run


def run(ctx: Context) -> Outcome:
    """Warm up, count descriptors, run traffic with faults, count again; summarise."""
    plan = QUICK if ctx.quick else FULL
    t0 = time.monotonic()
    site = Site(ctx, t0)
    urls = urls_file(ctx.workdir / "soak-urls.txt", site.front, PATHS)
    segments: list[tuple[float, StartedFixedRate]] = []
    faults: list[Fault] = []
    stop_sampling = threading.Event()
    sampler = threading.Thread(target=_sample, args=(site, plan, t0, stop_sampling), daemon=True)
    sampler.start()

    traffic_t0 = site.now()
    _traffic(ctx, site, urls, segments, traffic_t0, plan.warmup_s)
    _drain(ctx, segments)
    time.sleep(QUIET_S)
    fds_warm = {i.role: _fds(i.pid, site.ports) for i in site.live()}
    warm_end = site.now()

    failed: list[BaseException] = []
    fault_thread = threading.Thread(target=_faults, args=(site, plan, warm_end, faults, failed), daemon=True)
    fault_thread.start()
    _traffic(ctx, site, urls, segments, warm_end, plan.duration_s - plan.warmup_s)
    fault_thread.join()
    if failed:
        raise HarnessError(f"a fault could not be injected or mended: {failed[0]}") from failed[0]
    _drain(ctx, segments)
    time.sleep(QUIET_S)
    fds_end = {i.role: _fds(i.pid, site.ports) for i in site.live()}
    for proc in (site.frontend, site.backend):
        proc.check_alive()
    time.sleep(plan.sample_s)  # one more RSS sample, quiet
    stop_sampling.set()
    sampler.join()

    outcomes = _outcomes(ctx, segments, faults)
    growth = _rss_growth(site.incarnations, warm_end, plan)
    fd_leak = sum(fds_end[r]["not_to_origins"] - fds_warm[r]["not_to_origins"] for r in fds_end)
    result = {
        "rss_growth_pct_after_warmup": max(g["growth_pct"] for g in growth),
        "fd_leak": float(fd_leak),
        "errors_unexplained": float(outcomes["unexplained"]),
        "errors_explained": float(outcomes["explained"]),
        "requests": float(outcomes["requests"]),
        "faults": float(len(faults)),
    }
    data = {
        "plan": asdict(plan),
        "rate_rps": RATE,
        "paths": PATHS,
        "client_timeout_s": CLIENT_TIMEOUT_S,
        "grace_s": GRACE_S,
        "faults": [asdict(f) for f in faults],
        "fds_after_warmup": fds_warm,
        "fds_at_end": fds_end,
        "rss_growth": growth,
        "outcomes": outcomes,
        "rss_samples": [asdict(i) for i in site.incarnations],
        "plot": [
            {
                "title": "RSS growth after warm-up (%)",
                "ylabel": "%",
                "hline": 5.0,
                "groups": {f"{g['role']}@{g['started_s']:.0f}s": {"growth": g["growth_pct"]} for g in growth},
            },
            {
                "title": "requests that failed",
                "ylabel": "requests",
                "groups": {"failures": {k: outcomes[k] for k in ("explained", "unexplained")}},
            },
        ],
    }
    warnings = []
    if outcomes["unsent"] > 0.001 * outcomes["requests"]:
        warnings.append(f"{outcomes['unsent']} scheduled requests were never sent by oha")
    return Outcome(data=data, result=result, warnings=warnings)


def _traffic(
    ctx: Context, site: Site, urls: Path, segments: list[tuple[float, StartedFixedRate]], start_s: float, span_s: float
) -> None:
    """Back-to-back oha runs covering ``span_s`` from ``start_s``."""
    at = start_s
    while at < start_s + span_s - 0.5:
        length = min(SEGMENT_S, start_s + span_s - at)
        time.sleep(max(0.0, at - site.now()))
        load = Load(length, int(RATE * CLIENT_TIMEOUT_S), RATE, CLIENT_TIMEOUT_S)
        name = f"soak-{len(segments):04d}"
        seg = start_fixed_rate(ctx.group, ctx.tools.oha, site.front, load, ctx.workdir, name, LOAD_CPUS, urls)
        segments.append((site.now(), seg))
        at += length


def _drain(ctx: Context, segments: list[tuple[float, StartedFixedRate]]) -> None:
    """Wait for every oha run still going."""
    for _, seg in segments:
        if seg.proc.alive():
            seg.proc.popen.wait(timeout=seg.load.duration_s + CLIENT_TIMEOUT_S + 30)


def _faults(site: Site, plan: Plan, start_s: float, out: list[Fault], failed: list[BaseException]) -> None:
    """One fault every ``fault_every_s``, in turn, leaving the last stretch quiet."""
    at = start_s + plan.fault_every_s / 2
    k = 0
    try:
        while at < plan.duration_s - plan.fault_every_s / 2:
            time.sleep(max(0.0, at - site.now()))
            out.append(site.inject(FAULTS[k % len(FAULTS)]))
            k += 1
            at += plan.fault_every_s
    except Exception as err:  # reported by the main thread
        failed.append(err)


def _sample(site: Site, plan: Plan, t0: float, stop: threading.Event) -> None:
    """VmRSS of the front-end and the current back-end every ``sample_s`` until ``stop``."""
    while not stop.is_set():
        now = time.monotonic() - t0
        for inc in site.live():
            rss = _rss_kib(inc.pid)
            if rss is not None:
                inc.rss_kib.append((round(now, 1), rss))
        stop.wait(plan.sample_s)


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _fds(pid: int, origin_ports: list[int]) -> dict[str, int]:
    """Open descriptors of ``pid``: all, and those that are not TCP sockets to an origin."""
    inodes = set()
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue
        inodes.add(target)
    to_origins = set()
    ports = {f"{p:04X}" for p in origin_ports}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[2].rsplit(":", 1)[1] in ports:
                to_origins.add(f"socket:[{cols[9]}]")
    total = len(inodes)
    to = len(inodes & to_origins)
    return {"total": total, "to_origins": to, "not_to_origins": total - to}


def _rss_growth(incarnations: list[Incarnation], warm_end: float, plan: Plan) -> list[dict]:
    """Per incarnation that lived at least a warm-up past its own warm-up: RSS growth in %,
    from the median of the first :data:`LEVEL_S` of samples to the median of the last."""
    out = []
    for inc in incarnations:
        since = max(warm_end, inc.started_s + plan.warmup_s)
        samples = [(t, kib) for t, kib in inc.rss_kib if t >= since]
        if len(samples) < 2 or samples[-1][0] - samples[0][0] < plan.warmup_s:
            continue
        first = statistics.median(k for t, k in samples if t <= samples[0][0] + LEVEL_S)
        last = statistics.median(k for t, k in samples if t >= samples[-1][0] - LEVEL_S)
        out.append(
            {
                "role": inc.role,
                "started_s": inc.started_s,
                "from_s": samples[0][0],
                "to_s": samples[-1][0],
                "rss_kib_from": first,
                "rss_kib_to": last,
                "rss_kib_max": max(k for _, k in samples),
                "growth_pct": round(100 * (last - first) / first, 2),
            }
        )
    return out


def _outcomes(ctx: Context, segments: list[tuple[float, StartedFixedRate]], faults: list[Fault]) -> dict:
    """Every request's outcome: ok, or a failure a fault explains, or one nothing explains."""
    requests = ok = explained = unexplained = unsent = 0
    explained_by: dict[str, dict[str, int]] = {}
    unexplained_at: list[dict] = []
    for started_s, seg in segments:
        res: FixedRateResult = seg.finish(ctx.group)
        unsent += res.unsent
        for sched, latency, status in seg.rows():
            requests += 1
            if 200 <= status < 300 and latency <= CLIENT_TIMEOUT_S:
                ok += 1
                continue
            t = started_s + sched
            fault = next((f for f in faults if f.explains(t, t + latency)), None)
            if fault:
                explained += 1
                by = explained_by.setdefault(fault.kind, {})
                by[str(status)] = by.get(str(status), 0) + 1
            else:
                unexplained += 1
                unexplained_at.append({"t_s": round(t, 3), "latency_s": round(latency, 3), "status": status})
        untimed = sum(res.errors.values())
        requests += untimed
        if any(f.explains(started_s, started_s + seg.load.duration_s + CLIENT_TIMEOUT_S) for f in faults):
            explained += untimed
        elif untimed:
            unexplained += untimed
            unexplained_at.append({"t_s": round(started_s, 3), "untimed": untimed, "errors": res.errors})
    return {
        "requests": requests,
        "ok": ok,
        "explained": explained,
        "unexplained": unexplained,
        "unexplained_at_s": unexplained_at[:50],
        "explained_by_fault_and_status": explained_by,
        "unsent": unsent,
    }
