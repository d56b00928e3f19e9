"""Making variants of one sample: choose operators by the configured mix, apply them with
their own seeded rng, re-parse, and count what could not apply.

`variants_for(code, tests, sample_id, cfg, seed=...)` is what `TransformStage` calls (the
run and the `transform` CLI); `apply_ops` applies a given list of operators (the
throughput benchmark uses every one). Every random choice derives from the sample id and
the run's `seed`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

import libcst as cst

from pipeline.config import TransformConfig
from pipeline.transform.base import KINDS, Operator, Source, Variant, operators, rng_for
from pipeline.transform.verify import INVALID, changed_lines, parses

log = logging.getLogger(__name__)


def selected_operators(names: Iterable[str] | None = None) -> list[Operator]:
    """The registered operators named in `names` (all if None); ValueError names unknown
    ones and lists the known ones."""
    ops = operators()
    if names is None:
        return ops
    by_name = {op.name: op for op in ops}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown transform operator(s) {unknown}; known: {sorted(by_name)}")
    return [by_name[n] for n in names]


def apply_one(op: Operator, src: Source, counts: Counter[str], *, seed: int
              ) -> Variant | None:
    """Apply one operator; count `<op>:applied`, `:not_applicable`, `:invalid` (a refactor
    or bug that does not re-parse: an operator defect, logged) or `:crashed`."""
    try:
        v = op.apply(src, rng_for(src.sample_id, op.name, seed=seed))
    except (cst.ParserSyntaxError, RecursionError) as exc:
        counts[f"{op.name}:not_applicable"] += 1
        log.debug("%s: %s does not apply: %s", src.sample_id, op.name, exc)
        return None
    except Exception:  # an operator bug must not lose the sample
        counts[f"{op.name}:crashed"] += 1
        log.exception("%s: operator %s crashed", src.sample_id, op.name)
        return None
    if v is None or (v.code == src.code and v.tests == src.tests):
        counts[f"{op.name}:not_applicable"] += 1
        return None
    if op.kind != "augment" and not parses(v.code):
        counts[f"{op.name}:{INVALID}"] += 1
        log.warning("%s: %s produced code that does not parse; dropped", src.sample_id,
                    op.name)
        return None
    v.edit["lines"] = changed_lines(src.code, v.code)
    counts[f"{op.name}:applied"] += 1
    return v


def apply_ops(src: Source, ops: Iterable[Operator], counts: Counter[str] | None = None, *,
              seed: int) -> list[Variant]:
    """Every operator applied once to `src` (those that apply)."""
    counts = Counter() if counts is None else counts
    return [v for op in ops if (v := apply_one(op, src, counts, seed=seed)) is not None]


def quotas(n: int, mix: dict[str, float]) -> dict[str, int]:
    """Split `n` variants over kinds in proportion to `mix` (largest remainder)."""
    total = sum(mix.values())
    if n <= 0 or total <= 0:
        return {k: 0 for k in KINDS}
    exact = {k: n * mix.get(k, 0.0) / total for k in KINDS}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(KINDS, key=lambda k: (out[k] - exact[k], KINDS.index(k)))[:n - sum(
            out.values())]:
        out[k] += 1
    return out


def variants_for(code: str, tests: str, sample_id: str, cfg: TransformConfig,
                 counts: Counter[str] | None = None, *, seed: int) -> list[Variant]:
    """Up to `cfg.variants_per_sample` variants, split by `cfg.mix`; within a kind the
    operators are tried in a random order, per sample and `seed` (the run's), until its
    quota is met. Seed 0 reproduces the variants made before the seed was mixed in."""
    counts = Counter() if counts is None else counts
    src = Source(code, tests, sample_id)
    try:
        src.module  # noqa: B018 - parse once, up front
    except cst.ParserSyntaxError:
        counts["unparseable_input"] += 1
        return []
    ops = selected_operators(cfg.operators)
    out: list[Variant] = []
    for kind, quota in quotas(cfg.variants_per_sample, cfg.mix).items():
        pool = [op for op in ops if op.kind == kind]
        rng_for(sample_id, f"plan:{kind}", seed=seed).shuffle(pool)
        got = 0
        for op in pool:
            if got >= quota:
                break
            v = apply_one(op, src, counts, seed=seed)
            if v is not None:
                out.append(v)
                got += 1
    return out
