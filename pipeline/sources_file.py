"""Source samples and output assembly kept out of the driver's memory.

Loading seeds builds large, short-lived structures (snippet extraction, the seed
near-duplicate index: several KB per seed). Memory that Python frees is rarely given back to
the system, so it would stay in the driver's RSS for the whole run. So `prepare_sources`
loads every strategy's sources in a child process. The child writes them to one Parquet file
of `{"id", "json"}` rows (what the Ray executor reads with `read_parquet`) and their sorted
ids to a text file (for `--dry-run`), and hands back only what the driver needs: counts,
the fields the sources provide, the seed-task pool (small) and the loaders' figures.
`write_outputs_aside` runs the output assembly (pipeline/output.py) in a child the same
way, and `write_report_aside` the run report. The driver holds neither the sources nor the
rows.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import OutputConfig, PipelineConfig
from pipeline.record import Sample

_SCHEMA = pa.schema([("id", pa.string()), ("json", pa.string())])
CHUNK = 4096
BLOCKS = 64  # most blocks the sources are split into


@dataclass
class SourceFile:
    """Sources on disk, and what the driver needs to know of them."""

    path: Path
    ids_path: Path
    count: int = 0
    by_strategy: dict[str, int] = field(default_factory=dict)
    provided: set[str] = field(default_factory=set)
    tasks: list[Any] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def iter_samples(self) -> Iterator[Sample]:
        from pipeline.executor import iter_parquet_samples

        return iter_parquet_samples([self.path], CHUNK)

    def __iter__(self) -> Iterator[Sample]:
        return self.iter_samples()

    def __len__(self) -> int:
        return self.count


def _spawn() -> cf.ProcessPoolExecutor:
    # spawn, not fork: the driver may hold threads (the run guard, logging handlers).
    return cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))


def _load(cfg: PipelineConfig, state: Path) -> SourceFile:
    from pipeline.run import load_sources
    from pipeline.stages.strategy import BuildContext

    ctx = BuildContext(cfg=cfg)
    sources, provided = load_sources(ctx)
    out = SourceFile(path=state / "sources.parquet", ids_path=state / "source_ids.txt",
                     count=len(sources), by_strategy=dict(Counter(s.strategy for s in sources)),
                     provided=provided, tasks=ctx.tasks, stats=ctx.stats)
    tmp = out.path.with_name(out.path.name + ".tmp")
    # Row groups are what the Ray executor hands out as blocks: at least BLOCKS of them so
    # that every actor of a pool gets work (two seeds make two row groups).
    group = max(1, min(CHUNK, -(-len(sources) // BLOCKS)))
    with pq.ParquetWriter(tmp, _SCHEMA) as w:
        for i in range(0, len(sources), CHUNK):
            chunk = sources[i:i + CHUNK]
            w.write_table(pa.table({
                "id": [s.id for s in chunk],
                "json": [json.dumps(s.to_dict(), ensure_ascii=False) for s in chunk]},
                schema=_SCHEMA), row_group_size=group)
    tmp.replace(out.path)
    out.ids_path.write_text("".join(f"{i}\n" for i in sorted(s.id for s in sources)))
    return out


def prepare_sources(cfg: PipelineConfig, state: Path) -> SourceFile:
    """Load the sources in a child process into `state/sources.parquet` (see module doc)."""
    state.mkdir(parents=True, exist_ok=True)
    with _spawn() as pool:
        return pool.submit(_load, cfg, state).result()


def _write(out_dir: Path, shards: list[Path], stats: dict[str, Any], candidates: bool,
           output: OutputConfig) -> dict[str, Any]:
    from pipeline.executor import RunResult
    from pipeline.output import write_outputs

    return write_outputs(out_dir, RunResult(shards=shards).iter_samples(), stats,
                         candidates=candidates, output=output)


def write_outputs_aside(out_dir: Path, shards: list[Path], stats: dict[str, Any],
                        candidates: bool, output: OutputConfig) -> dict[str, Any]:
    """`write_outputs` over the executor's shards, in a child process."""
    with _spawn() as pool:
        return pool.submit(_write, out_dir, shards, stats, candidates, output).result()


def row_group_ranges(path: Path) -> list[tuple[int, int]]:
    """The file's row groups as at most BLOCKS contiguous [lo, hi) ranges."""
    groups = pq.ParquetFile(path).metadata.num_row_groups
    blocks = max(1, min(groups, BLOCKS))
    bounds = [groups * i // blocks for i in range(blocks + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def read_row_groups(path: Path, lo: int, hi: int) -> pa.Table:
    return pq.ParquetFile(path).read_row_groups(list(range(lo, hi)))


def _report(out_dir: Path) -> Path:
    from pipeline.report import write_report

    return write_report(out_dir)


def write_report_aside(out_dir: Path) -> Path:
    """OUT/report.html (pipeline/report), built in a child process: it reads the columns of
    every row."""
    with _spawn() as pool:
        return pool.submit(_report, out_dir).result()


def read_ids(path: Path) -> list[str]:
    return path.read_text().split() if path.is_file() else []
