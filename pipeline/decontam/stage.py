"""The decontamination stages of the pipeline.

- `decontam_instruction`: right after generation, on instructions that have no solution
  yet, with the text methods (n-grams, embeddings), so a restated benchmark problem is
  not solved, executed and scored for nothing.
- `decontam`: after the execution gate and each strategy's checks, on verified originals
  (instruction and code), with every configured method, execution included; before dedup
  and the transformations, so no variant is made of a contaminated sample.

A contaminated sample is rejected with reason `contaminated`; `sample.contamination` holds
the benchmark, the benchmark's own task id, the method and its score (and the run's
`rejected` set shows them).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pipeline.config import SandboxConfig
from pipeline.decontam.config import DecontamConfig
from pipeline.record import RejectReason, Sample
from pipeline.stage import Stage

log = logging.getLogger(__name__)


class DecontaminateStage(Stage):
    """Rejects samples that restate a benchmark problem (module docstring)."""

    inputs: ClassVar[tuple[str, ...]] = ("instruction",)
    outputs: ClassVar[tuple[str, ...]] = ("contamination",)

    def __init__(self, cfg: DecontamConfig, sandbox: SandboxConfig | None = None,
                 phase: str = "code") -> None:
        super().__init__()
        if phase not in ("instruction", "code"):
            raise ValueError(f"phase must be 'instruction' or 'code', got {phase!r}")
        self.cfg = cfg
        self.phase = phase
        self.name = "decontam" if phase == "code" else "decontam_instruction"  # type: ignore[misc]
        methods = list(cfg.methods)
        if phase == "instruction" or sandbox is None:
            methods = [m for m in methods if m != "execution"]
        self.methods = methods
        self.sandbox_cfg = sandbox
        self.pool = "sandbox" if "execution" in methods else "cpu"  # type: ignore[misc]
        self._detector: Any = None
        self._sandbox: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_detector"] = state["_sandbox"] = None
        return state

    def accepts(self, sample: Sample) -> bool:
        """instruction: samples without code not checked yet; code: originals with code
        not checked on their code yet (variants derive from a checked original)."""
        checked = sample.contamination or {}
        if self.phase == "instruction":
            return not sample.code and not checked
        return bool(sample.code) and sample.kind is None and not checked.get("code")

    def setup(self) -> None:
        self._load()

    def _load(self) -> None:
        if self._detector is not None:
            return
        from pipeline.decontam.detector import Decontaminator

        checker = None
        if "execution" in self.methods and self.sandbox_cfg is not None:
            from pipeline.decontam.execution import ExecutionChecker, probe_sandbox
            from pipeline.sandbox.pool import SandboxPool

            self._sandbox = SandboxPool(probe_sandbox(self.sandbox_cfg))
            self._sandbox.start()
            checker = ExecutionChecker(self._sandbox)
        cfg = self.cfg.model_copy(update={"methods": self.methods})
        self._detector = Decontaminator(cfg, sandbox=checker)

    def teardown(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    def process_batch(self, samples: list[Sample]) -> list[Sample]:
        if not samples:
            return samples
        from pipeline.decontam.detector import DecontamRecord

        self._load()
        records = [DecontamRecord(s.id, s.instruction,
                                  s.code if self.phase == "code" else "") for s in samples]
        for s, v in zip(samples, self._detector.check(records), strict=True):
            s.contamination = {**v.short(), "code": self.phase == "code"}
            if v.contaminated:
                self.counters[f"contaminated_{v.benchmark}_{v.method}"] += 1
                s.reject(self.name, RejectReason.CONTAMINATED,
                         f"{v.benchmark} {v.match} by {v.method}, score {v.score:.3f}")
        if self._detector.sandbox is not None:
            for k, n in self._detector.sandbox.counters.items():
                self.counters[f"execution_{k}"] = n
        return samples
