"""Run stages in this process, one stage after another. For tests and small jobs."""

from __future__ import annotations

import time

from pipeline.executor import RunResult, Samples, merge_counters
from pipeline.progress import StatsFn
from pipeline.stage import GlobalStep, Stage, stage_stats


class LocalExecutor:
    """Runs each stage over all samples in batches of `stage.batch_size`; a global step
    gets all samples in one call. `progress` gets the counters after every batch."""

    def __init__(self, progress: StatsFn | None = None) -> None:
        self.progress = progress

    def run(self, stages: list[Stage], source: Samples) -> RunResult:
        samples = list(source)
        stats: dict[str, dict[str, float]] = {}
        for stage in stages:
            t0 = time.perf_counter()
            stage.setup()
            try:
                if isinstance(stage, GlobalStep):
                    out = stage(samples)
                else:
                    out = []
                    for i in range(0, len(samples), stage.batch_size):
                        out.extend(stage(samples[i:i + stage.batch_size]))
                        if self.progress is not None:
                            self.progress({stage.name: dict(stage.counters)})
            finally:
                stage.teardown()
            samples = out
            st = stats.setdefault(stage.name, {})
            merge_counters(st, stage_stats(stage))
            st["seconds"] = round(time.perf_counter() - t0, 3)
            if self.progress is not None:
                self.progress({stage.name: st})
        return RunResult(samples=samples, stage_stats=stats)
