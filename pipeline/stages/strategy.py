"""What a generation strategy is made of: the `Strategy` record and its `BuildContext`.

A strategy is one module under `pipeline/stages/` plus its templates under `prompts/`;
the module ends with a `Strategy` record that says everything the pipeline needs to know
about it: where its source samples come from, the stages it adds before the execution
gate and after it, whether the shared solve stage answers its instructions, the stage
whose counters are its figures in stats.json (`by_strategy`), what run-wide dedup
compares, and the languages it can generate. `pipeline.stages.strategies` lists the
records; `pipeline.run.build_stages` turns the enabled ones into the stage list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.record import Sample
from pipeline.stage import Stage


@dataclass
class BuildContext:
    """What building sources and stages needs: the config, the seed-task pool, and (once
    the backend is up) the endpoint and the request cache. `stats` collects figures the
    sources report (e.g. seed-snippet drops) for stats.json."""

    cfg: PipelineConfig
    cache_path: str | None = None
    endpoint: Any = None
    tasks: list[Any] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def _no_stages(ctx: BuildContext) -> list[Stage]:
    return []


def instruction_text(sample: Sample) -> str:
    """What run-wide dedup compares by default: the instruction."""
    return sample.instruction


@dataclass(frozen=True)
class Strategy:
    """One generation strategy (see the module docstring)."""

    #: The name in `generation.strategies` and in every sample's `strategy`.
    name: str
    #: Round-0 source samples of a run.
    sources: Callable[[BuildContext], list[Sample]]
    #: Stages before the solve stage and the execution gate.
    generate: Callable[[BuildContext], list[Stage]]
    #: Stages after the execution gate (a strategy that derives tasks from verified code).
    verify: Callable[[BuildContext], list[Stage]] = _no_stages
    #: Fields its source samples carry besides `pipeline.run.SOURCE_FIELDS`.
    source_fields: frozenset[str] = frozenset()
    #: True if its sources come from the seed-task pool (`generation.seed_tasks`).
    uses_seed_tasks: bool = False
    #: True if the shared solve stage writes solutions and tests for its instructions.
    solved: bool = False
    #: The stage whose `generated`, `parsed` and `novel` counters are its figures.
    counted_by: str = ""
    #: What run-wide dedup compares for one of its samples.
    dedup_text: Callable[[Sample], str] = instruction_text
    #: Values of `generation.language` it supports.
    languages: frozenset[str] = frozenset({"python"})
