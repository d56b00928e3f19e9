"""The `python -m pipeline transform` engine: `{"id", "code", "tests"}` records in, one
record per variant out, made and judged by the run's own stages.

Each chunk of records becomes `Sample`s, taken as verified (the command's input is code
whose tests pass), that `TransformStage` and, with a sandbox, `VariantGateStage` process
under `LocalExecutor`. The samples that come out are mapped back to records: a kept bug
is its find-and-fix sample, which holds the bug's code and execution. Two fields of the
record are not on a `Sample`, so they are rebuilt here: `edit` and `parses` come from
replaying the variant's operator on its parent, which the seeded rng makes exact; and the
record's `id` stays the hash of parent, kind, op, code and tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.executor.local import LocalExecutor
from pipeline.record import ExecStatus, Execution, Sample
from pipeline.sandbox.channel import SandboxUnavailable
from pipeline.stage import FatalStageError, Stage
from pipeline.stages.transform import TransformStage, VariantGateStage
from pipeline.transform.base import KINDS, OPERATORS, Source, Variant
from pipeline.transform.generate import apply_one, selected_operators
from pipeline.transform.verify import parses

#: Records whose variants go through the stages together (the gate's sandbox pool is
#: started once per chunk, and the chunk's records are written when it is done).
CHUNK = 128


def _samples(records: list[dict[str, Any]], start: int) -> list[Sample]:
    out = []
    for n, rec in enumerate(records, start):
        if not isinstance(rec.get("code"), str) or not isinstance(rec.get("tests"), str):
            raise ValueError(f"record {n}: expected an object with string fields 'code' "
                             "and 'tests' (and an 'id')")
        out.append(Sample(id=str(rec.get("id", n)), code=rec["code"], tests=rec["tests"],
                          execution=Execution(ExecStatus.PASSED)))
    return out


def _all_ops(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` with every selected operator tried once per record: one variant per operator
    asked for, each kind's share its number of operators."""
    per_kind = Counter(op.kind for op in selected_operators(cfg.transform.operators))
    tcfg = cfg.transform.model_copy(update={
        "variants_per_sample": sum(per_kind.values()),
        "mix": {k: float(per_kind[k]) for k in KINDS}})
    return cfg.model_copy(update={"transform": tcfg})


def _stages(cfg: PipelineConfig, sandbox: bool) -> list[Stage]:
    transform = TransformStage(cfg.transform, seed=cfg.seed)
    transform.batch_size = cfg.ray.cpu_batch_size
    if not sandbox:
        return [transform]
    # Only the find-and-fix sample of a kept bug maps back to a record.
    gate = VariantGateStage(cfg.sandbox, cfg.transform.model_copy(
        update={"detect_samples": False}))
    gate.batch_size = cfg.ray.sandbox_batch_size
    return [transform, gate]


def _replayed(parent: Source, s: Sample, seed: int) -> Variant | None:
    op = OPERATORS.get(s.op or "")
    v = apply_one(op, parent, Counter(), seed=seed) if op is not None else None
    return v if v is not None and v.code == s.code and v.tests == s.tests else None


def variant_record(parent: Source, s: Sample, seed: int) -> dict[str, Any]:
    """The output record of variant `s` of `parent` (its code, tests and id) after the
    stages."""
    v = _replayed(parent, s, seed)
    rid = Sample(parent_id=parent.sample_id, kind=s.kind, op=s.op, code=s.code,
                 tests=s.tests).assign_id()
    ex = s.execution
    return {"id": rid, "parent_id": parent.sample_id, "kind": s.kind, "op": s.op, "code": s.code,
            "tests": s.tests, "edit": v.edit if v else {"op": s.op},
            "parses": v.parses if v else parses(s.code),
            "status": ex.status.value if ex else "not_run",
            "tests_passed": ex.tests_passed if ex else 0,
            "tests_total": ex.tests_total if ex else 0, "stderr": ex.stderr if ex else "",
            "verdict": "rejected" if s.rejected else "kept",
            "reason": s.reject_reason.value if s.reject_reason else None}


def transform_records(cfg: PipelineConfig, records: Iterable[dict[str, Any]], *,
                      sandbox: bool = True, all_ops: bool = False,
                      counts: Counter[str] | None = None) -> Iterator[dict[str, Any]]:
    """Variants of every record (`cfg.transform`, `cfg.seed`), verified in the sandbox
    (`cfg.sandbox`) unless `sandbox` is False; records of one input stay together.

    `all_ops` applies every selected operator once per record instead of the configured
    number and mix. `counts` collects the transform stage's `<op>:applied` /
    `:not_applicable` counts. Raises SandboxUnavailable if the sandbox cannot run,
    ValueError for a bad record.
    """
    counts = Counter() if counts is None else counts
    cfg = _all_ops(cfg) if all_ops else cfg
    it = iter(records)
    n = 1
    while chunk := list(islice(it, CHUNK)):
        parents = _samples(chunk, n)
        n += len(chunk)
        try:
            result = LocalExecutor().run(_stages(cfg, sandbox), parents)
        except FatalStageError as exc:
            raise SandboxUnavailable(str(exc)) from None
        counts.update({k: int(v) for k, v in result.stage_stats["transform"].items()
                       if ":" in k or k == "unparseable_input"})
        order = {p.id: (i, p) for i, p in reversed(list(enumerate(parents)))}
        variants = [s for s in result.samples if s.kind is not None
                    and s.strategy != "detect_bug" and s.parent_id in order]
        variants.sort(key=lambda s: (order[s.parent_id or ""][0], KINDS.index(s.kind)))
        sources: dict[str, Source] = {}
        for s in variants:
            pid = s.parent_id or ""
            if pid not in sources:
                parent = order[pid][1]
                sources[pid] = Source(parent.code, parent.tests, pid)
            yield variant_record(sources[pid], s, cfg.seed)
