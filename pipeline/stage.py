"""The stage contract. Stages never import Ray; executors map them onto workers.

A stage takes a batch of samples and returns a batch (possibly of another length: a
generator turns one seed into several samples). Rejected samples pass through untouched,
so every drop reaches the output with its stage and reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import ClassVar

from pipeline.record import RejectReason, Sample

log = logging.getLogger(__name__)


class Stage:
    """Base class of every pipeline stage.

    Subclasses set `name`, `inputs` (Sample fields they read) and `outputs` (fields they
    write), and implement `process_one` or, for batch-aware work, `process_batch`.
    `setup` runs once in the worker that hosts the stage (open clients, pools) and
    `teardown` once at the end; neither runs in the driver.
    """

    name: ClassVar[str] = "stage"
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    #: Samples per batch the executor hands over; I/O-bound stages want large batches.
    batch_size: int = 16
    #: Executor hint: which worker pool hosts the stage ("cpu", "llm" or "sandbox"); the
    #: Ray executor sizes each pool from the `ray` config section.
    pool: ClassVar[str] = "cpu"
    #: Executor hint: CPUs reserved per worker. I/O-bound stages (HTTP, containers) need
    #: little of the driver machine's cores.
    num_cpus: ClassVar[float] = 0.5

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()

    def setup(self) -> None:
        """Acquire resources in the worker process."""

    def teardown(self) -> None:
        """Release resources acquired in `setup`."""

    def process_one(self, sample: Sample) -> list[Sample]:
        """Process one live sample; return zero or more samples."""
        raise NotImplementedError

    def process_batch(self, samples: list[Sample]) -> list[Sample]:
        """Process a batch of live samples. Default: `process_one` on each."""
        out: list[Sample] = []
        for s in samples:
            out.extend(self.process_one(s))
        return out

    def __call__(self, samples: list[Sample]) -> list[Sample]:
        """Run the stage on a batch: pass rejects through, count everything."""
        live = [s for s in samples if not s.rejected]
        passthrough = [s for s in samples if s.rejected]
        self.counters["in"] += len(live)
        try:
            out = self.process_batch(live)
        except Exception as exc:  # a crashing batch must not kill the run
            if isinstance(exc, FatalStageError):
                raise
            log.exception("stage %s crashed on a batch of %d", self.name, len(live))
            out = [s.reject(self.name, RejectReason.STAGE_CRASH, repr(exc)) for s in live]
        for s in out:
            if s.rejected and s.reject_stage == self.name:
                self.counters[f"dropped_{s.reject_reason.value}"] += 1
            elif not s.rejected:
                self.counters["out"] += 1
        return passthrough + out

    def stats(self) -> dict[str, int]:
        return dict(self.counters)


class FatalStageError(RuntimeError):
    """An error that must stop the whole run (e.g. the LLM server is gone for good).

    The message tells the user what happened and how to resume.
    """


def check_chain(stages: list[Stage], provided: set[str]) -> None:
    """Check that every stage's inputs are written by an earlier stage or the source.

    Raises ValueError naming the stage and the missing fields.
    """
    have = set(provided)
    for st in stages:
        missing = [f for f in st.inputs if f not in have]
        if missing:
            raise ValueError(
                f"stage {st.name!r} reads {missing} but no earlier stage writes them; "
                f"available: {sorted(have)}"
            )
        have.update(st.outputs)
