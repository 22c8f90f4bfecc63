"""Load generation with oha, and the parsing of its results.

Two kinds of load:

* **closed loop** (``oha -c N -z D``): N connections each send the next request as soon as
  the previous answer arrives; the rate achieved is the proxy's maximum rate.
* **fixed rate** (``oha -q R --latency-correction -z D -w -t TIMEOUT``): requests are
  scheduled at R per second whatever happens to earlier ones; each latency is measured from
  the request's *scheduled* start, so a stalled server is not hidden (no coordinated
  omission). ``-w`` lets requests in flight at the deadline finish (or time out). oha takes
  the "scheduled" start as the moment its rate ticker woke, so a starved load core hides
  the ticker's own lag; the load core's busy share is recorded for that reason.

How fixed-rate results are counted (the same for every proxy):

* A request is a **success** only if it got a 2xx answer within the client timeout of its
  scheduled start. Everything else oha sent is a **failure**: timeouts, connection errors,
  non-2xx answers, and 2xx answers that came later than the timeout.
* Latency percentiles are taken over all requests sent (nearest rank), every failure
  counting as the client timeout. So a proxy cannot improve its p99 by failing fast.
* oha stops scheduling at the deadline; requests still queued inside oha at that moment are
  never sent. They are reported as ``unsent`` (R × D minus requests sent) and not counted:
  with the client timeout and at least R × timeout connections, every connection frees up
  within the timeout, so a backlog can only come from the load generator's own lag at the
  very end. Scenarios warn when ``unsent`` exceeds :data:`UNSENT_TOLERANCE` of R × D.

oha stores every answered request (any status) in SQLite (``--db-url``), with its scheduled
start and latency; errors are only counted in its JSON summary, without a time (see
:func:`_timeline` for how the per-second plot places them).
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .peers import HOSTNAME, Endpoint
from .procs import HarnessError, Proc, ProcessGroup

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
UNSENT_TOLERANCE = 0.001
COUNTING = (
    "percentiles over all requests sent (nearest rank), latency from the scheduled start; a failure "
    "(timeout, connection error, non-2xx, or 2xx later than the timeout) counts as the client timeout; "
    "success = 2xx within the timeout; requests oha never sent at the deadline are reported as unsent, not counted"
)


@dataclass(frozen=True)
class Load:
    """Parameters of one oha run."""

    duration_s: float
    connections: int
    rate: float | None = None  # requests per second; None means closed loop
    timeout_s: float | None = None  # client timeout per request (fixed rate only)


@dataclass
class ClosedLoopResult:
    """What a closed-loop run achieved."""

    ok_rps: float
    ok: int
    failed: int
    duration_s: float
    status: dict[str, int]
    errors: dict[str, int]


@dataclass
class FixedRateResult:
    """What a fixed-rate run measured (see the module docstring for how it counts)."""

    rate: float
    duration_s: float
    timeout_s: float
    scheduled: int
    ok: int
    failed: int
    unsent: int
    success_rate: float
    latency_ms: dict[str, float]
    status: dict[str, int]
    errors: dict[str, int]
    timeline: list[dict[str, float]] = field(repr=False)

    def to_json(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def oha_argv(
    oha: str, target: Endpoint, load: Load, json_out: Path, db_out: Path | None, path: str | Path = "/"
) -> list[str]:
    """The oha command line for ``load`` against ``target`` (with the benchmark's Host header).

    ``path`` is the request path; or the name of a file of URLs (see :func:`urls_file`) when it
    is a :class:`Path`, each request then taking one of them at random.
    """
    url = ["--urls-from-file", str(path)] if isinstance(path, Path) else [target.url + path.lstrip("/")]
    argv = [
        oha, *url,
        "--no-tui", "--output-format", "json", "-o", str(json_out),
        "--worker-threads", "1",
        "-H", f"Host: {HOSTNAME}",
        "-c", str(load.connections),
        "-z", f"{load.duration_s * 1000:.0f}ms",
    ]  # fmt: skip
    if load.rate is not None:
        argv += ["-q", f"{load.rate:.1f}", "--latency-correction", "-w"]
    if load.timeout_s is not None:
        argv += ["-t", f"{load.timeout_s * 1000:.0f}ms"]
    if db_out is not None:
        argv += ["--db-url", str(db_out)]
    return argv


def run_closed_loop(
    group: ProcessGroup, oha: str, target: Endpoint, load: Load, out_dir: Path, name: str, cpus: str
) -> ClosedLoopResult:
    """Run closed-loop load and return the rate of 2xx answers."""
    json_out = out_dir / f"{name}.json"
    group.run(name, oha_argv(oha, target, load, json_out, None), cpus, timeout_s=load.duration_s + 30)
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


def run_fixed_rate(
    group: ProcessGroup, oha: str, target: Endpoint, load: Load, out_dir: Path, name: str, cpus: str
) -> FixedRateResult:
    """Run fixed-rate load with latency correction and count it as the module docstring says."""
    return start_fixed_rate(group, oha, target, load, out_dir, name, cpus).finish(group)


def urls_file(path: Path, target: Endpoint, paths: list[str]) -> Path:
    """Write an oha ``--urls-from-file`` list: ``paths`` on ``target``, one URL a line."""
    path.write_text("".join(target.url + p.lstrip("/") + "\n" for p in paths))
    return path


@dataclass
class StartedFixedRate:
    """A fixed-rate oha run started in the background (several can run at once)."""

    proc: Proc
    load: Load
    json_out: Path
    db_out: Path

    def finish(self, group: ProcessGroup) -> FixedRateResult:
        """Wait for oha to exit and count its run as the module docstring says."""
        assert self.load.rate is not None and self.load.timeout_s is not None
        group.wait(self.proc, timeout_s=self.load.duration_s + self.load.timeout_s + 60)
        return _count_fixed_rate(self.load, _read_summary(self.json_out), self.rows())

    def rows(self) -> list[tuple[float, float, int]]:
        """(scheduled start s from oha's start, latency s, status) of every answered request."""
        return _read_rows(self.db_out)


def start_fixed_rate(
    group: ProcessGroup,
    oha: str,
    target: Endpoint,
    load: Load,
    out_dir: Path,
    name: str,
    cpus: str,
    path: str | Path = "/",
) -> StartedFixedRate:
    """Start fixed-rate load with latency correction; :meth:`StartedFixedRate.finish` counts it."""
    if load.rate is None or load.timeout_s is None:
        raise ValueError("fixed-rate load needs a rate and a timeout")
    json_out = out_dir / f"{name}.json"
    db_out = out_dir / f"{name}.sqlite"
    db_out.unlink(missing_ok=True)
    proc = group.start(name, oha_argv(oha, target, load, json_out, db_out, path), cpus)
    return StartedFixedRate(proc, load, json_out, db_out)


def _count_fixed_rate(load: Load, summary: dict, rows: list[tuple[float, float, int]]) -> FixedRateResult:
    assert load.rate is not None and load.timeout_s is not None
    errors = _real_errors(summary["errorDistribution"])

    scheduled = math.floor(load.rate * load.duration_s)
    sent = len(rows) + sum(errors.values())
    ok_latencies = [lat for _, lat, status in rows if 200 <= status < 300 and lat <= load.timeout_s]
    ok = len(ok_latencies)
    failed = sent - ok
    unsent = max(0, scheduled - sent)
    return FixedRateResult(
        rate=load.rate,
        duration_s=load.duration_s,
        timeout_s=load.timeout_s,
        scheduled=scheduled,
        ok=ok,
        failed=failed,
        unsent=unsent,
        success_rate=round(ok / max(sent, 1), 6),
        latency_ms=percentiles_ms(ok_latencies, failed, load.timeout_s),
        status=summary["statusCodeDistribution"],
        errors=errors,
        timeline=_timeline(rows, load, sum(errors.values())),
    )


def unsent_warning(label: str, res: FixedRateResult) -> str | None:
    """A warning when more than :data:`UNSENT_TOLERANCE` of the schedule was never sent."""
    if res.unsent <= UNSENT_TOLERANCE * res.scheduled:
        return None
    return (
        f"{label}: {res.unsent} of {res.scheduled} scheduled requests were never sent "
        "(load generator lagging or connections stuck); they are not counted"
    )


def percentiles_ms(ok_latencies_s: list[float], failures: int, timeout_s: float) -> dict[str, float]:
    """Nearest-rank percentiles (ms) of successes plus ``failures`` counted at ``timeout_s``."""
    values = sorted(ok_latencies_s) + [timeout_s] * failures
    out = {}
    for p in PERCENTILES:
        key = "p" + f"{p:g}".replace(".", "")
        if not values:
            out[key] = timeout_s * 1000
            continue
        rank = max(1, math.ceil(p / 100 * len(values)))
        out[key] = round(values[rank - 1] * 1000, 3)
    return out


def _timeline(rows: list[tuple[float, float, int]], load: Load, errors: int) -> list[dict[str, float]]:
    """Per second of scheduled time: p99 (ms) and success rate.

    Answered requests fall in the second of their scheduled start. oha gives no time for
    its ``errors`` (timeouts, connection errors), so they are shared out over the seconds in
    proportion to each second's deficit (expected R requests, fewer answered): the timeline
    then adds up to the run's totals, though a second where oha itself lagged may receive a
    share that belongs to a neighbour. It is an illustration; the run's percentiles are exact.
    """
    assert load.rate is not None and load.timeout_s is not None
    seconds = math.ceil(load.duration_s)
    buckets: list[list[tuple[float, int]]] = [[] for _ in range(seconds)]
    for sched, lat, status in rows:
        buckets[min(max(int(sched), 0), seconds - 1)].append((lat, status))
    deficits = [max(0, round(load.rate * min(1.0, load.duration_s - k)) - len(b)) for k, b in enumerate(buckets)]
    total_deficit = sum(deficits) or 1
    out = []
    for second, bucket in enumerate(buckets):
        ok = [lat for lat, status in bucket if 200 <= status < 300 and lat <= load.timeout_s]
        failures = len(bucket) - len(ok) + round(errors * deficits[second] / total_deficit)
        out.append(
            {
                "t_s": float(second),
                "p99_ms": percentiles_ms(ok, failures, load.timeout_s)["p99"],
                "success_rate": round(len(ok) / max(len(ok) + failures, 1), 4),
            }
        )
    return out


def _read_summary(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise HarnessError(f"could not read oha's JSON output {path}: {err}") from None


def _read_rows(db: Path) -> list[tuple[float, float, int]]:
    """(scheduled start s, latency s, status) of every answered request."""
    if not db.exists():
        return []  # oha writes no database when nothing was answered
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COALESCE(start_latency_correction, start), duration, status FROM oha").fetchall()


def _count_2xx(status: dict[str, int]) -> int:
    return sum(n for code, n in status.items() if code.startswith("2"))


def _real_errors(errors: dict[str, int]) -> dict[str, int]:
    """Errors except oha's "aborted due to deadline" (closed loop cut off by ``-z``)."""
    return {k: v for k, v in errors.items() if k != "aborted due to deadline"}
