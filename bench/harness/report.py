"""Summaries, result files (JSON and PNG) and the RESULT line."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


def spread(values: list[float]) -> dict[str, float]:
    """min / median / max of repeated measurements."""
    return {
        "min": round(min(values), 4),
        "median": round(statistics.median(values), 4),
        "max": round(max(values), 4),
        "n": len(values),
    }


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def versions(tools: dict[str, str]) -> dict[str, str]:
    """First line of each tool's version output."""
    flags = {"nginx": ["-v"], "haproxy": ["-v"], "oha": ["--version"], "causeway": ["--version"]}
    out = {}
    for name, path in tools.items():
        proc = subprocess.run([path, *flags[name]], capture_output=True, text=True, check=False)
        text = (proc.stdout or proc.stderr).strip().splitlines()
        out[name] = text[0] if text else f"exit {proc.returncode}"
    return out


def stamp() -> str:
    """The current UTC time for file names, e.g. ``20260101T120000Z``."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def write(results_dir: Path, scenario: str, mode: str, document: dict) -> tuple[Path, Path]:
    """Write ``SCENARIO-MODE-STAMP.json`` and ``.png``; return both paths."""
    results_dir.mkdir(parents=True, exist_ok=True)
    base = results_dir / f"{scenario}-{mode}-{stamp()}"
    json_path = base.with_suffix(".json")
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    png_path = base.with_suffix(".png")
    PLOTS[scenario](document, png_path)
    return json_path, png_path


def result_line(result: dict[str, float | str]) -> str:
    """``RESULT key=value ...`` with numbers rounded for reading; a word (``unavailable``) as is."""
    return "RESULT " + " ".join(f"{k}={v:.5g}" if isinstance(v, float | int) else f"{k}={v}" for k, v in result.items())


def _bars(ax, labels: list[str], stats: list[dict[str, float]], color: str, ylabel: str, log: bool = False) -> None:
    """Median bars with min–max whiskers (on a log scale when values span orders of magnitude)."""
    medians = [s["median"] for s in stats]
    errs = [
        [m - s["min"] for m, s in zip(medians, stats, strict=True)],
        [s["max"] - m for m, s in zip(medians, stats, strict=True)],
    ]
    ax.bar(labels, medians, yerr=errs, capsize=4, color=color)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.tick_params(axis="x", labelrotation=20)
    for i, m in enumerate(medians):
        text = f"{m:,.0f}" if m >= 100 else f"{m:.3g}"
        ax.annotate(text, (i, m), ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")


def _plot_throughput(doc: dict, path: Path) -> None:
    data = doc["data"]
    labels = data["proxies"]
    per = data["summary"]["per_proxy"]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.5))
    _bars(a, labels, [per[x]["max_rps"] for x in labels], "#4c72b0", "requests/s (2xx)")
    a.set_title("maximum rate (closed loop)")
    _bars(b, labels, [per[x]["fixed_rate_p99_ms"] for x in labels], "#dd8452", "p99 latency (ms)", log=True)
    b.set_title(f"p99 at fixed rate ({data['fixed_rate']})", fontsize=9)
    _bars(c, labels, [per[x]["proxy_cpu_us_per_request"] for x in labels], "#55a868", "CPU µs per request")
    c.set_title("proxy CPU time per request at maximum rate", fontsize=9)
    fig.suptitle(f"gateway-throughput ({doc['mode']}, median of {data['plan']['rounds']} rounds, min–max bars)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_tail(doc: dict, path: Path) -> None:
    data = doc["data"]
    labels = data["proxies"]
    per = data["summary"]["per_proxy"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [1, 1, 1.6]})
    _bars(axes[0], labels, [per[x]["p99"] for x in labels], "#4c72b0", "p99 latency (ms)", log=True)
    axes[0].set_title("p99 (failures count as the 1 s timeout)", fontsize=9)
    _bars(axes[1], labels, [per[x]["p999"] for x in labels], "#c44e52", "p99.9 latency (ms)", log=True)
    axes[1].set_title("p99.9", fontsize=9)
    last = data["rounds"][-1]
    ax = axes[2]
    for label in labels:
        timeline = last["runs"][label]["timeline"]
        ax.plot([p["t_s"] for p in timeline], [p["p99_ms"] for p in timeline], label=label, linewidth=1.4)
    lo, hi = last["runs"][labels[0]]["slow_window_s"]
    ax.axvspan(lo, hi, color="grey", alpha=0.15, label="one origin +2 s")
    ax.set_yscale("log")
    ax.set_xlabel("seconds into the run (scheduled start)")
    ax.set_ylabel("p99 per second (ms)")
    ax.set_title(f"round {last['round']}: p99 per second", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(
        f"gateway-tail ({doc['mode']}, {data['rate_rps']:.0f} req/s fixed rate, median of "
        f"{data['plan']['rounds']} rounds, min–max bars); success: "
        + ", ".join(f"{x} {per[x]['success_rate']['median']:.4f}" for x in labels),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_panels(doc: dict, path: Path) -> None:
    """Grouped bars from ``data["plot"]``: a list of panels ``{title, ylabel, log, groups}``,
    where ``groups`` maps an x label to ``{series: value}`` (the WAN scenarios use this)."""
    panels = doc["data"]["plot"]
    # One colour per series name across every panel.
    names = list(dict.fromkeys(n for p in panels for g in p["groups"].values() for n in g))
    colours = {n: f"C{i % 10}" for i, n in enumerate(names)}
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        groups = panel["groups"]
        xlabels = list(groups)
        series = list(dict.fromkeys(s for g in groups.values() for s in g))
        width = 0.8 / max(len(series), 1)
        for i, name in enumerate(series):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(xlabels))]
            ys = [groups[x].get(name, 0.0) for x in xlabels]
            ax.bar(xs, ys, width=width, label=name, color=colours[name])
        ax.set_xticks(range(len(xlabels)), xlabels, rotation=15, fontsize=8)
        ax.set_ylabel(panel["ylabel"])
        ax.set_title(panel["title"], fontsize=9)
        if panel.get("log"):
            ax.set_yscale("log")
        if panel.get("hline") is not None:
            ax.axhline(panel["hline"], color="grey", linestyle="--", linewidth=1)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{doc['scenario']} ({doc['mode']}): " + " ".join(f"{k}={v:.4g}" for k, v in doc["result"].items()), fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PLOTS = {
    "gateway-throughput": _plot_throughput,
    "gateway-tail": _plot_tail,
    "wan-latency": _plot_panels,
    "wan-hol": _plot_panels,
    "tmp-priority": _plot_panels,
    "tmp-fairness": _plot_panels,
    "operator": _plot_panels,
    "dns": _plot_panels,
    "faults": _plot_panels,
    "fuzz": _plot_panels,
    "cache-hit": _plot_panels,
    "overload": _plot_panels,
    "soak": _plot_panels,
}
