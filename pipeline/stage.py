"""The stage contract. Stages never import Ray; executors map them onto workers.

A `Stage` takes a batch of samples and returns a batch (possibly of another length: a
generator turns one seed into several samples). A `GlobalStep` is a stage that sees every
live sample of its scope at once (run-wide dedup, a novelty pool, selection). Both say
which samples are theirs (`accepts`); the others, and every rejected sample, pass through
untouched and uncounted, so every drop reaches the output with its stage and reason.

Counters, per stage (`Stage.counters`, summed over workers into stats.json):

- `received`: live samples of its scope handed to it;
- `consumed`: of those, the ones it did not hand back (a seed a generator used up);
- `created`: samples it handed back that it was not given (generated, variants);
- `in`: samples it decided on, = received - consumed + created;
- `out`: live samples it handed back; `dropped_<reason>`: samples it rejected.

So `in = out + sum(dropped_*)` for every stage, and a filter has `in = received`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import ClassVar, TypeVar

from pipeline.record import RejectReason, Sample

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class Stage:
    """Base class of every pipeline stage.

    Subclasses set `name`, `inputs` (Sample fields they read) and `outputs` (fields they
    write), say which samples are theirs with `accepts`, and implement `process_one` or,
    for batch-aware work, `process_batch`. `setup` runs once in the worker that hosts the
    stage (open clients, pools) and `teardown` once at the end; neither runs in the driver.
    """

    name: ClassVar[str] = "stage"
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    #: Samples per batch the executor hands over. `pipeline.run.build_stages` sets it per
    #: instance from the `ray` config section (`*_batch_size`); this is the fallback for
    #: stages built by hand (tests).
    batch_size: int = 16
    #: Executor hint: which worker pool hosts the stage ("cpu", "llm" or "sandbox"); the
    #: Ray executor sizes each pool from the `ray` config section.
    pool: ClassVar[str] = "cpu"
    #: Executor hint: CPUs reserved per worker. I/O-bound stages (HTTP, containers) need
    #: little of the driver machine's cores.
    num_cpus: ClassVar[float] = 0.5

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        #: Units of work finished so far in this worker (answered requests...). The Ray
        #: executor's stall watch reads it: a long batch that ticks is not stalled.
        self.ticks = 0

    def ticked(self, results: Iterable[_T]) -> list[_T]:
        """All of `results` (a stream of finished units of work: sandbox verdicts...), with
        a tick for each as it arrives."""
        out = []
        for r in results:
            out.append(r)
            self.ticks += 1
        return out

    def accepts(self, sample: Sample) -> bool:
        """True for the live samples this stage works on; the rest pass through uncounted."""
        return True

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
        """Run the stage on a batch: pass the others through, count what is its own."""
        return self._run(samples, self.process_batch)

    def _run(self, samples: list[Sample],
             work: Callable[[list[Sample]], list[Sample]]) -> list[Sample]:
        mine = [s for s in samples if not s.rejected and self.accepts(s)]
        taken = {id(s) for s in mine}
        passthrough = [s for s in samples if id(s) not in taken]
        try:
            out = work(mine)
        except Exception as exc:  # a crashing batch must not kill the run
            if isinstance(exc, FatalStageError):
                raise
            log.exception("stage %s crashed on a batch of %d", self.name, len(mine))
            out = [s.reject(self.name, RejectReason.STAGE_CRASH, repr(exc)) for s in mine]
        out = self.after(out)
        self._count(mine, taken, out)
        return passthrough + out

    def after(self, out: list[Sample]) -> list[Sample]:
        """Hook on the stage's own output before it is counted (GlobalStep: variants)."""
        return out

    def _count(self, mine: list[Sample], taken: set[int], out: list[Sample]) -> None:
        returned = {id(s) for s in out}
        c = self.counters
        c["received"] += len(mine)
        c["consumed"] += sum(1 for s in mine if id(s) not in returned)
        c["created"] += sum(1 for s in out if id(s) not in taken)
        c["in"] += len(out)
        for s in out:
            if not s.rejected:
                c["out"] += 1
            elif s.reject_stage == self.name and s.reject_reason is not None:
                c[f"dropped_{s.reject_reason.value}"] += 1
            else:  # handed back a sample that another stage rejected: a stage bug
                c["returned_foreign_rejects"] += 1
        # The same per strategy, for the report's funnel: `<strategy>:received`, `:out`
        # (live samples left) and `:created`.
        for s in mine:
            c[f"{s.strategy or 'none'}:received"] += 1
        for s in out:
            if not s.rejected:
                c[f"{s.strategy or 'none'}:out"] += 1
            if id(s) not in taken:
                c[f"{s.strategy or 'none'}:created"] += 1

    def stats(self) -> dict[str, int]:
        return dict(self.counters)


class GlobalStep(Stage):
    """A stage that needs every live sample of its scope at once.

    Executors call it once with all samples (the local executor in-process; the Ray
    executor in one actor, after the upstream dataset is materialised, so the samples
    never pass through the driver). It keeps `Stage`'s scope, pass-through and counters.
    A sample it rejects takes its transformation variants (`kind` set, `parent_id` the
    sample, transitively) with it, with the same reason, when they are in its scope.
    `report` may hold non-counter figures (tables) for stats.json. With
    `observes_rejected`, `observed` holds the rejected samples of its scope during
    `process_all` (to read, e.g. failed candidates in a pass rate; they pass through).
    """

    pool: ClassVar[str] = "cpu"
    #: The stream is cut at a global step, so the stages before it are done; its actor
    #: reserves no CPU, which would otherwise wait for those stages' actors to go away.
    num_cpus: ClassVar[float] = 0.0
    observes_rejected: ClassVar[bool] = False
    #: Whether a rejected sample takes its variants with it. Selection sets False: there a
    #: variant competes with its original instead of depending on it.
    cascades: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.report: dict[str, object] = {}
        self.observed: list[Sample] = []

    def process_all(self, samples: list[Sample]) -> list[Sample]:
        """Process every live sample of the scope together; return what goes on."""
        raise NotImplementedError

    def __call__(self, samples: list[Sample]) -> list[Sample]:
        if self.observes_rejected:
            self.observed = [s for s in samples if s.rejected and self.accepts(s)]
        try:
            return self._run(samples, self.process_all)
        finally:
            self.observed = []

    def after(self, out: list[Sample]) -> list[Sample]:
        """Reject the live variants of every sample this step rejected."""
        if not self.cascades:
            return out
        dropped = {s.id: s for s in out if s.rejected and s.reject_stage == self.name}
        changed = bool(dropped)
        while changed:
            changed = False
            for s in out:
                parent = dropped.get(s.parent_id or "")
                if s.rejected or s.kind is None or parent is None:
                    continue
                assert parent.reject_reason is not None
                s.reject(self.name, parent.reject_reason,
                         f"variant of {parent.id}, which was dropped: {parent.reject_detail}")
                dropped[s.id] = s
                changed = True
        return out


def stage_stats(stage: Stage) -> dict[str, object]:
    """A stage's counters plus, for a global step, its report."""
    out: dict[str, object] = dict(stage.counters)
    if isinstance(stage, GlobalStep) and stage.report:
        out.update(stage.report)
    return out


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
                f"available: {sorted(have)}")
        have.update(st.outputs)
