"""``overload``: three times the origins' capacity; who sheds well, keeps class 0 fast, recovers?

Two Causeway demo origins answer every request after :data:`ORIGIN_DELAY_S`; each proxy may
hold at most :data:`PER_ORIGIN` requests on each origin at once (an origin with that many
workers), so the capacity is known: ``ORIGINS × PER_ORIGIN / ORIGIN_DELAY_S`` answers/s.
What does not fit waits in the proxy's queue for at most :data:`QUEUE_TIMEOUT_S`, then is
answered 503 (see :class:`harness.peers.Queueing` for how each proxy is configured):

* Causeway ``gateway`` (``qos``): ``maxInFlight``, ``queue.timeout``, a ``queue.maxLength``
  the run never fills, ``queue.standingWait`` :data:`STANDING_WAIT_S`, and priority rules
  ``/checkout`` → class 0, ``/catalogue`` → class 4, everything else class 2;
* HAProxy ``leastconn`` with ``maxconn`` per server, ``timeout queue`` and
  ``http-request set-priority-class`` for the same paths (``haproxy/priority``), the fair peer;
* the same HAProxy without priority classes (``haproxy/fifo``), for reference.

Load (oha, fixed rate, latency-corrected, :data:`CLIENT_TIMEOUT_S` client timeout), two
streams at once: a steady class-0 stream of :data:`CLASS0_RPS` on ``/checkout``, and the
rest of the phase's rate on a mix of ``/api/…`` (class 2) and ``/catalogue/…`` (class 4).
Three phases back to back, each stream a fresh oha per phase started at the phase's
moment (the previous one may still be finishing its last requests): **under** (half the
capacity), **over** (three times), **after** (half again).

Measured per proxy: class-0 p99 during *over* (failures count as the client timeout);
goodput during *over* (2xx within the client timeout, per second, both streams: it counts
the *over* requests a queue still serves after the drop, which delays the *after* phase);
goodput in the window (2xx answers that completed during *over*, whichever phase sent them:
the origins' useful work, at most the capacity);
``recovery_s``, the scheduled start (from the drop) of the last request of the *after*
phase that failed or took longer than :data:`RECOVERED_LATENCY_S`; and, from a probe
sending class-4 requests during *over*, the share of 503s that carried ``Retry-After``.
RESULT: Causeway's class-0 p99 and goodput divided by ``haproxy/priority``'s (medians over
rounds), and Causeway's own figures; and ``class0_p99_floor_ratio_vs_haproxy``, the ratio a
scheduler that never let class 0 wait would reach: Causeway's class-0 p50 *under* capacity
(nothing queued: the origin's answer time plus the proxy's own) over ``haproxy/priority``'s
class-0 p99 during *over*. No proxy that keeps the origins' marks can go below it: every slot
is busy during *over*, so a class-0 request either waits for one to free or its slot was kept
idle for it, at the cost of goodput.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..load import COUNTING, FixedRateResult, Load, StartedFixedRate, start_fixed_rate, unsent_warning, urls_file
from ..peers import HOSTNAME, Endpoint, ProxySpec, Queueing, start_causeway_origin, start_proxy, wait_origins
from ..procs import HarnessError
from ..report import spread
from . import LOAD_CPUS, PROXY_CPUS, Context, Outcome

NEEDS = ("gateway", "origin")
ORIGINS = 2
ORIGIN_DELAY_S = 0.05
PER_ORIGIN = 4
CAPACITY_RPS = ORIGINS * PER_ORIGIN / ORIGIN_DELAY_S
QUEUE_TIMEOUT_S = 1.0
# Causeway's wait bound once the queue stands (not emptied for ``standingAfter``, 1 s): what
# cannot be served is refused at once instead of at the timeout, and little is queued when
# the load drops. HAProxy has no counterpart; its queue keeps the timeout.
STANDING_WAIT_S = 0.25
QUEUE_LENGTH = 4096  # more than the run ever queues: HAProxy's queue has no length bound either
CLIENT_TIMEOUT_S = 2.0
CLASS0_RPS = 10.0
CLASS0_PATH = "/checkout/pay"
CLASS0_GOAL_MS = 250.0
# Mostly class 2, some class 4.
BACKGROUND_PATHS = ["/api/items"] * 3 + ["/catalogue/page"] * 2
PROBE_PATH = "/catalogue/probe"
PROBE_THREADS = 4
RECOVERED_LATENCY_S = 3 * ORIGIN_DELAY_S
CLASSES = (("/checkout", 0), ("/catalogue", 4))

CAUSEWAY = "causeway/qos"
HAPROXY = "haproxy/priority"
HAPROXY_FIFO = "haproxy/fifo"
PROXIES = {
    CAUSEWAY: (ProxySpec("causeway", "qos"), CLASSES),
    HAPROXY: (ProxySpec("haproxy", "leastconn"), CLASSES),
    HAPROXY_FIFO: (ProxySpec("haproxy", "leastconn"), ()),
}


@dataclass(frozen=True)
class Phase:
    """A stretch of load at ``factor`` × the capacity."""

    name: str
    factor: float
    duration_s: float


@dataclass(frozen=True)
class Plan:
    """Phases and repetitions."""

    rounds: int
    phases: tuple[Phase, ...]


QUICK = Plan(rounds=1, phases=(Phase("under", 0.5, 5.0), Phase("over", 3.0, 8.0), Phase("after", 0.5, 6.0)))
FULL = Plan(rounds=3, phases=(Phase("under", 0.5, 15.0), Phase("over", 3.0, 30.0), Phase("after", 0.5, 15.0)))


def run(ctx: Context) -> Outcome:
    """Every proxy through the three phases, in every round; summarise."""
    plan = QUICK if ctx.quick else FULL
    origins = wait_origins(
        [
            start_causeway_origin(ctx.group, ctx.tools, f"origin{i + 1}", LOAD_CPUS, None, ORIGIN_DELAY_S)
            for i in range(ORIGINS)
        ]
    )
    labels = list(PROXIES)
    warnings: list[str] = []
    rounds = []
    for index in range(plan.rounds):
        order = labels[index % len(labels) :] + labels[: index % len(labels)]
        runs = {label: _one_run(ctx, plan, label, origins, f"r{index + 1}", warnings) for label in order}
        c, h = runs[CAUSEWAY], runs[HAPROXY]
        ratios = {
            "class0_p99_vs_haproxy": round(c["class0_p99_ms"] / h["class0_p99_ms"], 4),
            "goodput_vs_haproxy": round(c["goodput_rps"] / h["goodput_rps"], 4),
            "goodput_in_window_vs_haproxy": round(c["goodput_in_window_rps"] / h["goodput_in_window_rps"], 4),
            "class0_p99_floor_vs_haproxy": round(c["class0_unqueued_p50_ms"] / h["class0_p99_ms"], 4),
        }
        rounds.append({"round": index + 1, "order": order, "runs": runs, "ratios": ratios})

    figures = (
        "class0_p99_ms",
        "class0_unqueued_p50_ms",
        "goodput_rps",
        "goodput_in_window_rps",
        "recovery_s",
        "shed_503_with_retry_after_pct",
        "over_503_pct",
    )
    per_proxy = {label: {f: spread([r["runs"][label][f] for r in rounds]) for f in figures} for label in labels}
    ratios = {k: spread([r["ratios"][k] for r in rounds]) for k in rounds[0]["ratios"]}
    mine = per_proxy[CAUSEWAY]
    result = {
        "class0_p99_ratio_vs_haproxy": ratios["class0_p99_vs_haproxy"]["median"],
        "goodput_ratio_vs_haproxy": ratios["goodput_vs_haproxy"]["median"],
        "goodput_in_window_ratio_vs_haproxy": ratios["goodput_in_window_vs_haproxy"]["median"],
        "class0_p99_floor_ratio_vs_haproxy": ratios["class0_p99_floor_vs_haproxy"]["median"],
        "class0_p99_ms": mine["class0_p99_ms"]["median"],
        "class0_within_goal": float(mine["class0_p99_ms"]["max"] <= CLASS0_GOAL_MS),
        "recovery_s": mine["recovery_s"]["median"],
        "shed_503_with_retry_after_pct": mine["shed_503_with_retry_after_pct"]["median"],
        "class0_p99_ratio_vs_haproxy_fifo": round(
            mine["class0_p99_ms"]["median"] / per_proxy[HAPROXY_FIFO]["class0_p99_ms"]["median"], 4
        ),
    }
    data = {
        "plan": asdict(plan),
        "capacity_rps": CAPACITY_RPS,
        "origins": f"{ORIGINS} × causeway origin, {ORIGIN_DELAY_S * 1000:.0f} ms per answer, core {LOAD_CPUS}",
        "queueing": asdict(_queueing(CLASSES)),
        "class0": f"{CLASS0_RPS:g} req/s on {CLASS0_PATH}, goal p99 ≤ {CLASS0_GOAL_MS:g} ms",
        "background_paths": BACKGROUND_PATHS,
        "client_timeout_s": CLIENT_TIMEOUT_S,
        "recovered_latency_s": RECOVERED_LATENCY_S,
        "counting": COUNTING,
        "proxies": {
            label: {"spec": spec.label, "classes": list(classes)} for label, (spec, classes) in PROXIES.items()
        },
        "summary": {"ratios": ratios, "per_proxy": per_proxy},
        "rounds": rounds,
        "plot": _plot(per_proxy, labels),
    }
    return Outcome(data=data, result=result, warnings=warnings)


def _queueing(classes: tuple[tuple[str, int], ...]) -> Queueing:
    return Queueing(
        per_origin=PER_ORIGIN,
        timeout_s=QUEUE_TIMEOUT_S,
        max_length=QUEUE_LENGTH,
        classes=classes,
        standing_wait_s=STANDING_WAIT_S,
    )


def _one_run(ctx: Context, plan: Plan, label: str, origins: list[Endpoint], tag: str, warnings: list[str]) -> dict:
    """A fresh proxy; the phases back to back with a shed probe during *over*; its figures."""
    spec, classes = PROXIES[label]
    name = f"{tag}-{label.replace('/', '-')}"
    ep, proxy = start_proxy(ctx.group, ctx.tools, ctx.workdir, spec, origins, PROXY_CPUS, _queueing(classes), name)
    urls = urls_file(ctx.workdir / f"{name}-urls.txt", ep, BACKGROUND_PATHS)
    started: dict[str, tuple[StartedFixedRate, StartedFixedRate]] = {}
    offsets: dict[str, float] = {}
    probe = _ShedProbe(ep)
    try:
        t0 = time.monotonic()
        offset = 0.0
        for phase in plan.phases:
            time.sleep(max(0.0, t0 + offset - time.monotonic()))
            started[phase.name] = _start_phase(ctx, phase, ep, urls, f"{name}-{phase.name}")
            offsets[phase.name] = offset
            if phase.name == "over":
                probe.start(phase.duration_s)
            offset += phase.duration_s
        results = {}
        for phase in plan.phases:
            background, class0 = started[phase.name]
            results[phase.name] = {
                "background": background.finish(ctx.group),
                "class0": class0.finish(ctx.group),
            }
        probe.join()
        proxy.check_alive()
    finally:
        ctx.group.stop(proxy)

    for phase_name, res in results.items():
        for stream, r in res.items():
            warning = unsent_warning(f"{name} {phase_name} {stream}", r)
            if warning:
                warnings.append(warning)
    over = next(p for p in plan.phases if p.name == "over")
    over_res = results["over"]
    answered_over = sum(over_res["background"].status.values())
    recovery_s, untimed = _recovery(started["after"], results["after"])
    if untimed:
        warnings.append(f"{name}: {untimed} requests of the after phase failed without an answer (no time known)")
    return {
        "class0_p99_ms": over_res["class0"].latency_ms["p99"],
        "class0_unqueued_p50_ms": results["under"]["class0"].latency_ms["p50"],
        "goodput_rps": round((over_res["background"].ok + over_res["class0"].ok) / over.duration_s, 1),
        "goodput_in_window_rps": _answered_within(started, offsets, offsets["over"], over.duration_s),
        "recovery_s": recovery_s,
        "after_untimed_failures": untimed,
        "over_503_pct": round(100 * over_res["background"].status.get("503", 0) / max(answered_over, 1), 2),
        **probe.figures(),
        "phases": {phase: {stream: _brief(r) for stream, r in res.items()} for phase, res in results.items()},
    }


def _start_phase(
    ctx: Context, phase: Phase, ep: Endpoint, urls: Path, name: str
) -> tuple[StartedFixedRate, StartedFixedRate]:
    """Start the phase's two oha streams: the class 2/4 mix and the steady class-0 stream."""
    total = phase.factor * CAPACITY_RPS
    background_rps = total - CLASS0_RPS
    # Every request of one queue timeout plus an answer may be waiting at once (about 750
    # connections at 3×: under the gateway's per-client-address limit of 1024).
    connections = max(16, int(background_rps * (QUEUE_TIMEOUT_S + ORIGIN_DELAY_S) * 1.5))
    background = Load(phase.duration_s, connections, background_rps, CLIENT_TIMEOUT_S)
    class0 = Load(phase.duration_s, max(8, int(CLASS0_RPS * CLIENT_TIMEOUT_S * 1.5)), CLASS0_RPS, CLIENT_TIMEOUT_S)
    return (
        start_fixed_rate(ctx.group, ctx.tools.oha, ep, background, ctx.workdir, f"{name}-mix", LOAD_CPUS, urls),
        start_fixed_rate(ctx.group, ctx.tools.oha, ep, class0, ctx.workdir, f"{name}-class0", LOAD_CPUS, CLASS0_PATH),
    )


def _answered_within(
    started: dict[str, tuple[StartedFixedRate, StartedFixedRate]],
    offsets: dict[str, float],
    start: float,
    duration: float,
) -> float:
    """2xx answers per second that completed inside [start, start + duration) (seconds from the
    first phase's start), whichever phase sent them: the origins' useful work in that window.
    A queue that serves its backlog after the window earns nothing here for it."""
    done = 0
    for phase, streams in started.items():
        for stream in streams:
            for sched, latency, status in stream.rows():
                finished = offsets[phase] + sched + latency
                if 200 <= status < 300 and start <= finished < start + duration:
                    done += 1
    return round(done / duration, 1)


def _recovery(
    after: tuple[StartedFixedRate, StartedFixedRate], results: dict[str, FixedRateResult]
) -> tuple[float, int]:
    """Seconds from the drop to the scheduled start of the last bad request of the *after*
    phase (failed, or slower than :data:`RECOVERED_LATENCY_S`); and how many failed unanswered."""
    last_bad = 0.0
    for stream in after:
        for sched, latency, status in stream.rows():
            if not 200 <= status < 300 or latency > RECOVERED_LATENCY_S:
                last_bad = max(last_bad, sched)
    untimed = sum(sum(res.errors.values()) for res in results.values())
    return round(last_bad, 3), untimed


def _brief(res: FixedRateResult) -> dict:
    out = res.to_json()
    out.pop("timeline")
    return out


class _ShedProbe:
    """Class-4 requests sent one after another from a few threads during *over*: the status of
    each answer, and whether a 503 carried ``Retry-After`` (oha does not record headers)."""

    def __init__(self, target: Endpoint) -> None:
        self.target = target
        self.statuses: dict[int, int] = {}
        self.with_retry_after = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, duration_s: float) -> None:
        deadline = time.monotonic() + duration_s
        self._threads = [
            threading.Thread(target=self._loop, args=(deadline,), daemon=True) for _ in range(PROBE_THREADS)
        ]
        for t in self._threads:
            t.start()

    def join(self) -> None:
        for t in self._threads:
            t.join(timeout=CLIENT_TIMEOUT_S + 5)
        if any(t.is_alive() for t in self._threads):
            raise HarnessError("the shed probe did not finish")

    def _loop(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", self.target.port, timeout=CLIENT_TIMEOUT_S)
            try:
                conn.request("GET", PROBE_PATH, headers={"Host": HOSTNAME})
                resp = conn.getresponse()
                resp.read()
                with self._lock:
                    self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
                    if resp.status == 503 and resp.getheader("Retry-After"):
                        self.with_retry_after += 1
            except (OSError, http.client.HTTPException):
                with self._lock:
                    self.failures += 1
                time.sleep(0.05)
            finally:
                conn.close()

    def figures(self) -> dict:
        shed = self.statuses.get(503, 0)
        return {
            "probe_statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "probe_failures": self.failures,
            "shed_503_with_retry_after_pct": round(100 * self.with_retry_after / shed, 2) if shed else 0.0,
        }


def _plot(per_proxy: dict, labels: list[str]) -> list[dict]:
    return [
        {
            "title": f"class-0 p99 at 3× capacity (goal {CLASS0_GOAL_MS:g} ms; failure = {CLIENT_TIMEOUT_S:g} s)",
            "ylabel": "ms",
            "log": True,
            "hline": CLASS0_GOAL_MS,
            "groups": {label: {"class-0 p99": per_proxy[label]["class0_p99_ms"]["median"]} for label in labels},
        },
        {
            "title": f"goodput at 3× capacity (capacity {CAPACITY_RPS:g}/s)",
            "ylabel": "2xx answers/s",
            "hline": CAPACITY_RPS,
            "groups": {label: {"goodput": per_proxy[label]["goodput_rps"]["median"]} for label in labels},
        },
        {
            "title": "time to recover after the drop; 503s with Retry-After",
            "ylabel": "s / %",
            "groups": {
                label: {
                    "recovery_s": per_proxy[label]["recovery_s"]["median"],
                    "503 with Retry-After (%/100)": per_proxy[label]["shed_503_with_retry_after_pct"]["median"] / 100,
                }
                for label in labels
            },
        },
    ]
