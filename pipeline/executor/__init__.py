"""Executors run a list of stages over samples: in-process (local) or on Ray Data."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.record import Sample


@dataclass
class RunResult:
    """Every sample that left the last stage (kept and rejected) and per-stage stats."""

    samples: list[Sample]
    stage_stats: dict[str, dict[str, float]] = field(default_factory=dict)


def merge_counters(into: dict[str, float], add: dict[str, float]) -> None:
    """Add counter values from `add` into `into`."""
    for k, v in add.items():
        into[k] = into.get(k, 0) + v
