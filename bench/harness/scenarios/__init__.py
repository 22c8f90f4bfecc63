"""Benchmark scenarios and what they share.

A scenario module defines ``NEEDS`` (the causeway subcommands it runs) and
``run(ctx) -> Outcome``. CPU placement is fixed here for every scenario: each proxy runs
pinned to :data:`PROXY_CPUS`; oha and the origins share :data:`LOAD_CPUS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from ..peers import Tools
from ..procs import ProcessGroup

PROXY_CPUS = "0"
LOAD_CPUS = "1"


@dataclass
class Context:
    """What a scenario run gets: tools, a process group, a scratch directory, the mode."""

    tools: Tools
    group: ProcessGroup
    workdir: Path
    quick: bool


@dataclass
class Outcome:
    """A scenario's findings: everything for the JSON file, and the RESULT line's keys."""

    data: dict
    result: dict[str, float | str]
    warnings: list[str] = field(default_factory=list)


def registry() -> dict[str, ModuleType]:
    """Scenario name → module."""
    from . import (
        cache_hit,
        dns,
        faults,
        fuzz,
        k8s_operator,
        overload,
        soak,
        tail,
        throughput,
        tmp_fairness,
        tmp_priority,
        wan_hol,
        wan_latency,
    )

    return {
        "gateway-throughput": throughput,
        "gateway-tail": tail,
        "wan-latency": wan_latency,
        "wan-hol": wan_hol,
        "tmp-priority": tmp_priority,
        "tmp-fairness": tmp_fairness,
        "operator": k8s_operator,
        "dns": dns,
        "faults": faults,
        "fuzz": fuzz,
        "cache-hit": cache_hit,
        "overload": overload,
        "soak": soak,
    }
