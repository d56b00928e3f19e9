"""ExecuteStage: run every live sample's code against its tests in the sandbox.

Passed samples go on with `sample.execution` set; the others are rejected with
exec_failed, exec_timeout, exec_memory_exceeded or sandbox_error (and keep their
`execution`, so the output shows what happened). A sandbox outage is never `failed`: if a
whole batch is sandbox_error because no runner can be started, the stage raises
FatalStageError with the fix rather than drop the dataset.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pipeline.config import SandboxConfig
from pipeline.record import ExecStatus, Sample
from pipeline.sandbox.channel import SandboxUnavailable
from pipeline.sandbox.pool import SandboxPool
from pipeline.sandbox.verdict import execution_from_result, reject_reason
from pipeline.stage import FatalStageError, Stage

log = logging.getLogger(__name__)


class ExecuteStage(Stage):
    """The execution gate. `setup` starts a pool of warm sandboxes; `teardown` removes it."""

    name: ClassVar[str] = "execute"
    inputs: ClassVar[tuple[str, ...]] = ("code", "tests", "language")
    outputs: ClassVar[tuple[str, ...]] = ("execution",)
    pool: ClassVar[str] = "sandbox"
    num_cpus: ClassVar[float] = 0.25

    def __init__(self, cfg: SandboxConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._pool: SandboxPool | None = None
        self._outage: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Shipped to workers before setup; never carry live handles.
        state = dict(self.__dict__)
        state["_pool"] = None
        return state

    def accepts(self, sample: Sample) -> bool:
        """Samples whose code has not been run yet."""
        return sample.execution is None

    def setup(self) -> None:
        """Start the pool. An unavailable sandbox is remembered, not raised: the first
        batch then fails with FatalStageError and the fix."""
        self._start()

    def _start(self) -> None:
        pool = SandboxPool(self.cfg)
        try:
            pool.start()
        except SandboxUnavailable as exc:
            pool.close()
            self._outage = str(exc)
            log.error("sandbox unavailable: %s", exc)
            return
        self._pool, self._outage = pool, None

    def teardown(self) -> None:
        """Stop the runners and remove every container of this stage's pool."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def process_batch(self, samples: list[Sample]) -> list[Sample]:
        if not samples:
            return samples
        if self._pool is None:
            self._start()  # not set up yet, or retrying after an outage
        if self._pool is None:
            results = None
        else:
            results = self.ticked(self._pool.run_iter((i, s.code, s.tests, s.language)
                                                      for i, s in enumerate(samples)))
        errors = 0
        for i, s in enumerate(samples):
            if results is None:
                ex = execution_from_result({"status": "sandbox_error",
                                            "stderr": f"[sandbox] {self._outage}"})
                detail = self._outage or "sandbox unavailable"
            else:
                ex = execution_from_result(results[i])
                detail = str(results[i].get("detail") or "")
            s.execution = ex
            self.counters[f"exec_{ex.status.value}"] += 1
            reason = reject_reason(ex.status)
            if reason is not None:
                s.reject(self.name, reason, detail)
            errors += ex.status is ExecStatus.SANDBOX_ERROR
        outage = self._outage if self._pool is None else self._pool.outage
        if errors == len(samples) and outage:
            raise FatalStageError(
                f"the sandbox is unavailable, so {len(samples)} sample(s) could not be "
                f"executed: {outage}. Fix it and rerun with the same --output to resume.")
        return samples
