"""The `python -m pipeline transform` engine: `{"id", "code", "tests"}` records in, one
record per variant out, each with the sandbox verdict.

Refactor and bug variants run in the sandbox; augment variants (broken code, for repair
pairs) do not run. A refactor is kept if its tests pass, a bug if at least one fails;
the others are written as rejected with the reason (see pipeline.transform.verify).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from pipeline.config import SandboxConfig, TransformConfig
from pipeline.record import Sample
from pipeline.sandbox.pool import SandboxPool
from pipeline.sandbox.verdict import parse_status
from pipeline.transform.base import Variant
from pipeline.transform.generate import apply_ops, selected_operators, variants_for
from pipeline.transform.verify import verdict

#: Records whose variants are generated and sent to the sandbox together.
CHUNK = 32


def variant_record(parent_id: str, v: Variant) -> dict[str, Any]:
    """The output record of a variant, before verification."""
    s = Sample(parent_id=parent_id, kind=v.kind, op=v.op, code=v.code, tests=v.tests)
    return {"id": s.assign_id(), "parent_id": parent_id, "kind": v.kind, "op": v.op,
            "code": v.code, "tests": v.tests, "edit": v.edit, "parses": v.parses}


def _generate(records: Iterable[dict[str, Any]], tcfg: TransformConfig, all_ops: bool,
              counts: Counter[str], start: int) -> list[dict[str, Any]]:
    out = []
    ops = selected_operators(tcfg.operators) if all_ops else None
    for n, rec in enumerate(records, start):
        if not isinstance(rec, dict) or not isinstance(rec.get("code"), str) \
                or not isinstance(rec.get("tests"), str):
            raise ValueError(f"record {n}: expected an object with string fields 'code' "
                             "and 'tests' (and an 'id')")
        pid = str(rec.get("id", n))
        if ops is not None:
            from pipeline.transform.base import Source
            variants = apply_ops(Source(rec["code"], rec["tests"], pid), ops, counts)
        else:
            variants = variants_for(rec["code"], rec["tests"], pid, tcfg, counts)
        out += [variant_record(pid, v) for v in variants]
    return out


def judge(rec: dict[str, Any], res: dict[str, Any] | None) -> dict[str, Any]:
    """Fill in the sandbox result and the verdict of one variant record."""
    if res is None:
        rec.update(status="not_run", tests_passed=0, tests_total=0, stderr="",
                   verdict="kept", reason=None)
        return rec
    status = parse_status(res.get("status"))
    reason = verdict(rec["kind"], status)
    rec.update(status=status.value, tests_passed=int(res.get("tests_passed") or 0),
               tests_total=int(res.get("tests_total") or 0),
               stderr=str(res.get("stderr") or ""),
               verdict="kept" if reason is None else "rejected", reason=reason)
    return rec


def transform_records(tcfg: TransformConfig, scfg: SandboxConfig | None,
                      records: Iterable[dict[str, Any]], *, all_ops: bool = False,
                      counts: Counter[str] | None = None) -> Iterator[dict[str, Any]]:
    """Variants of every record, verified in the sandbox (`scfg`; None: not run).

    `all_ops` applies every selected operator once per record instead of the configured
    number and mix. `counts` collects `<op>:applied`/`:not_applicable` counts. Raises
    SandboxUnavailable if the sandbox cannot start, ValueError for a bad record.
    """
    counts = Counter() if counts is None else counts
    it = iter(records)
    pool = SandboxPool(scfg) if scfg is not None else None
    if pool is not None:
        pool.start()
    try:
        n = 1
        while chunk := list(islice(it, CHUNK)):
            variants = _generate(chunk, tcfg, all_ops, counts, n)
            n += len(chunk)
            runs = [v for v in variants if v["kind"] != "augment"] if pool else []
            results = pool.run_many((v["id"], v["code"], v["tests"]) for v in runs) \
                if pool else []
            by_id = {id(v): r for v, r in zip(runs, results, strict=False)}
            for v in variants:
                yield judge(v, by_id.get(id(v)))
    finally:
        if pool is not None:
            pool.close()
