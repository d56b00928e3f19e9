"""Executors run a list of stages over samples: in-process (local) or on Ray Data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.record import Sample


class Samples(Protocol):
    """What an executor runs over: a list of samples, or a SourceFile (read from disk)."""

    def __iter__(self) -> Iterator[Sample]: ...

    def __len__(self) -> int: ...


def iter_parquet_samples(paths: list[Path], batch_rows: int = 1024) -> Iterator[Sample]:
    """The samples in Parquet files of `{"id", "json"}` rows, streamed."""
    import pyarrow.parquet as pq

    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["json"]):
            for row in batch.column(0).to_pylist():
                yield Sample.from_dict(json.loads(row))


@dataclass
class RunResult:
    """What left the last stage (kept and rejected samples) and per-stage stats.

    The samples are either in memory (`samples=`, the local executor) or in Parquet shards
    of `{"id", "json"}` rows (`shards=`, the Ray executor): `iter_samples` streams either;
    `samples` reads them all (tests, small jobs).
    """

    stage_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    in_memory: list[Sample] | None = None
    shards: list[Path] = field(default_factory=list)

    def __init__(self, samples: list[Sample] | None = None,
                 stage_stats: dict[str, dict[str, Any]] | None = None,
                 shards: list[Path] | None = None) -> None:
        self.in_memory = samples
        self.stage_stats = stage_stats or {}
        self.shards = list(shards or [])

    @property
    def samples(self) -> list[Sample]:
        if self.in_memory is None:
            self.in_memory = list(self.iter_samples())
        return self.in_memory

    def iter_samples(self, batch_rows: int = 1024) -> Iterator[Sample]:
        if self.in_memory is not None:
            yield from self.in_memory
            return
        yield from iter_parquet_samples(self.shards, batch_rows)


def merge_counters(into: dict[str, Any], add: dict[str, Any]) -> None:
    """Add counter values from `add` into `into`; a global step's report values (tables,
    not numbers) are taken as they are."""
    for k, v in add.items():
        if isinstance(v, (int, float)) and isinstance(into.get(k, 0), (int, float)):
            into[k] = into.get(k, 0) + v
        else:
            into[k] = v
