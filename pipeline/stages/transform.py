"""Transform stages: variants of passed samples, then a sandbox gate on the variants.

- `TransformStage` (cpu): for every live sample that passed execution, emits the sample
  itself plus up to `transform.variants_per_sample` variants (`kind`, `op`, `parent_id`
  set; ids are content hashes). Refactor samples keep the instruction and answer with the
  refactored code; augment samples become repair pairs (broken code in the instruction,
  the original as the response). Bug variants carry the original code as their response
  until the gate has seen them fail.
- `VariantGateStage` (sandbox): re-runs refactor and bug variants. A refactor must still
  pass, a bug must fail at least one test; kept bugs become a find-and-fix sample (failing
  output in the prompt) and, if `detect_samples`, a bug-detection sample. In every
  derived sample `code` is the variant that was run and `response` the training target.
"""

from __future__ import annotations

from typing import ClassVar

from pipeline.config import SandboxConfig, TransformConfig
from pipeline.prompts import render
from pipeline.record import ExecStatus, Sample
from pipeline.sandbox.verdict import execution_from_result
from pipeline.stage import FatalStageError, Stage
from pipeline.stages.execute import ExecuteStage
from pipeline.transform.generate import selected_operators, variants_for
from pipeline.transform.verify import changed_lines, reject_reason, verdict

#: Characters of failing test output shown in a find-and-fix prompt.
MAX_TEST_OUTPUT = 1500


def _fenced(code: str, language: str) -> str:
    return f"```{language}\n{code.strip()}\n```"


class TransformStage(Stage):
    """Variants of every passed sample (the sample itself passes through first)."""

    name: ClassVar[str] = "transform"
    inputs: ClassVar[tuple[str, ...]] = ("code", "tests", "execution")
    outputs: ClassVar[tuple[str, ...]] = ("kind", "op", "parent_id")
    pool: ClassVar[str] = "cpu"
    num_cpus: ClassVar[float] = 1.0

    def __init__(self, cfg: TransformConfig, *, seed: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.seed = seed
        selected_operators(cfg.operators)  # unknown names fail at construction

    def accepts(self, sample: Sample) -> bool:
        """Verified originals: variants are not transformed again, unverified code neither."""
        return sample.kind is None and sample.execution is not None \
            and sample.execution.status is ExecStatus.PASSED

    def process_one(self, sample: Sample) -> list[Sample]:
        out = [sample]
        for v in variants_for(sample.code, sample.tests, sample.id, self.cfg, self.counters,
                              seed=self.seed):
            child = Sample(strategy=sample.strategy, parent_id=sample.id,
                           seed_ref=sample.seed_ref, seed=sample.seed, round=sample.round + 1,
                           kind=v.kind, op=v.op, language=sample.language, code=v.code,
                           tests=v.tests, model=sample.model)
            if v.kind == "refactor":
                child.instruction = sample.instruction
                child.response = sample.response.replace(sample.code, v.code) \
                    if sample.code and sample.code in sample.response \
                    else _fenced(v.code, sample.language)
            elif v.kind == "augment":
                child.instruction = render("repair.jinja2", code=v.code,
                                           language=sample.language)
                child.response = _fenced(sample.code, sample.language)
            else:
                child.response = sample.code  # the fix; the gate writes the prompts
            child.assign_id()
            self.counters[f"variants_{v.kind}"] += 1
            out.append(child)
        return out


class VariantGateStage(ExecuteStage):
    """Runs refactor and bug variants in the sandbox; keeps refactors that pass and bugs
    that fail. Other samples pass through untouched."""

    name: ClassVar[str] = "variant_gate"
    inputs: ClassVar[tuple[str, ...]] = ("code", "tests", "kind", "op", "parent_id")
    outputs: ClassVar[tuple[str, ...]] = ("execution", "instruction", "response")
    pool: ClassVar[str] = "sandbox"
    num_cpus: ClassVar[float] = 0.25

    def __init__(self, cfg: SandboxConfig, tcfg: TransformConfig) -> None:
        super().__init__(cfg)
        self.tcfg = tcfg

    def accepts(self, sample: Sample) -> bool:
        """Refactor and bug variants not run yet (augment variants are broken on purpose)."""
        return sample.kind in ("refactor", "bug") and sample.execution is None

    def process_batch(self, samples: list[Sample]) -> list[Sample]:
        runs = samples
        if not runs:
            return samples
        if self._pool is None:
            self._start()
        if self._pool is None:
            raise FatalStageError(
                f"the sandbox is unavailable, so {len(runs)} variant(s) could not be "
                f"verified: {self._outage}. Fix it and rerun with the same --output to resume.")
        results = self.ticked(self._pool.run_iter((i, s.code, s.tests)
                                                  for i, s in enumerate(runs)))
        extra: list[Sample] = []
        for s, res in zip(runs, results, strict=False):
            s.execution = execution_from_result(res)
            reason = verdict(s.kind or "", s.execution.status)
            self.counters[f"{s.kind}_{reason or 'kept'}"] += 1
            if reason is not None:
                s.reject(self.name, reject_reason(reason),
                         f"{reason}: {s.kind} {s.op}: " + str(res.get("detail") or "")[:500])
            elif s.kind == "bug":
                extra += self._bug_samples(s)
        return [s for s in samples if s.kind != "bug" or s.rejected] + extra

    def _bug_samples(self, s: Sample) -> list[Sample]:
        original = s.response
        output = (s.execution.stderr or s.execution.stdout)[-MAX_TEST_OUTPUT:] \
            if s.execution else ""
        fix = Sample(**{**s.__dict__, "scores": dict(s.scores), "tokens": dict(s.tokens)})
        fix.strategy = "fix_bug"
        fix.instruction = render("fix_bug.jinja2", code=s.code, tests=s.tests,
                                 test_output=output.strip() or "(no output)",
                                 language=s.language)
        fix.response = _fenced(original, s.language)
        fix.assign_id()
        out = [fix]
        if self.tcfg.detect_samples:
            diff = changed_lines(original, s.code)
            det = Sample(**{**fix.__dict__, "scores": {}, "tokens": {}})
            det.strategy = "detect_bug"
            det.instruction = render("detect_bug.jinja2", part="instruction", code=s.code,
                                     language=s.language)
            op = next((o for o in selected_operators() if o.name == s.op), None)
            det.response = render(
                "detect_bug.jinja2", part="answer", language=s.language,
                line=(diff.get("new_lines") or [0])[0], buggy_line=diff.get("new_text", ""),
                fixed_line=diff.get("old_text", ""),
                description=op.description if op else s.op)
            det.assign_id()
            out.append(det)
        return out
