"""Executors run a list of stages over samples: in-process (local) or on Ray Data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.record import Sample


@dataclass
class RunResult:
    """Every sample that left the last stage (kept and rejected) and per-stage stats."""

    samples: list[Sample]
    stage_stats: dict[str, dict[str, Any]] = field(default_factory=dict)


def merge_counters(into: dict[str, Any], add: dict[str, Any]) -> None:
    """Add counter values from `add` into `into`; a global step's report values (tables,
    not numbers) are taken as they are."""
    for k, v in add.items():
        if isinstance(v, (int, float)) and isinstance(into.get(k, 0), (int, float)):
            into[k] = into.get(k, 0) + v
        else:
            into[k] = v
