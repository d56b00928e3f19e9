"""Exact and near-duplicate code removal, within a run and against earlier runs.

Two global steps after verification and decontamination, beside the ROUGE-L step on
instructions (`pipeline.dedup.DedupStep`), in the same fixed order (strategy, round, id),
so the first occurrence is kept and the result is the same on every rerun:

- `ExactDedupStep` ("dedup_exact"): the same normalised instruction (lowercased, runs of
  whitespace collapsed) and normalised code (Python: `ast.unparse` of its tree, so
  comments and layout do not count; otherwise whitespace collapsed).
- `MinHashDedupStep` ("dedup_minhash"): code whose estimated Jaccard similarity with an
  earlier kept sample's is >= `dedup.minhash_threshold`, over identifier-normalised token
  n-grams (`pipeline.minhash`: renamed variables and reformatting do not hide a copy).

Transformation variants are exempt (similar to their original by design); a dropped
sample's variants go with it (`GlobalStep`). `dedup.against` names earlier runs (their
`dataset` directory, or a dataset directory): their rows are taken before this run's, so
a sample that repeats one is dropped (`duplicate`, naming the earlier row).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import ClassVar

from pipeline.record import RejectReason, Sample
from pipeline.stage import GlobalStep

_WS = re.compile(r"\s+")


def normalise_instruction(text: str) -> str:
    return _WS.sub(" ", text.lower()).strip()


def normalise_code(code: str) -> str:
    """Python code without comments and layout (its unparsed AST); other code with runs
    of whitespace collapsed."""
    try:
        return ast.unparse(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError):
        return _WS.sub(" ", code).strip()


def previous_rows(paths: list[str]) -> list[tuple[str, str, str]]:
    """(id, instruction, code) of every row of the earlier runs' datasets, in order."""
    import datasets

    rows: list[tuple[str, str, str]] = []
    for p in paths:
        path = Path(p).expanduser()
        target = path / "dataset" if (path / "dataset").is_dir() else path
        try:
            ds = datasets.load_from_disk(str(target))
        except Exception as exc:
            raise ValueError(f"dedup.against: cannot load a dataset from {target} ({exc}) — "
                             "give an earlier run's output directory or its dataset "
                             "directory") from None
        splits = ds.values() if isinstance(ds, datasets.DatasetDict) else [ds]
        for split in splits:
            for r in split.select_columns(["id", "instruction", "code"]):
                rows.append((f"{p}:{r['id']}", r["instruction"] or "", r["code"] or ""))
    return rows


def _ordered(samples: list[Sample]) -> list[Sample]:
    return sorted((s for s in samples if s.kind is None),
                  key=lambda s: (s.strategy, s.round, s.id))


class ExactDedupStep(GlobalStep):
    """Drops repeats of (normalised instruction, normalised code) (module docstring)."""

    name: ClassVar[str] = "dedup_exact"
    inputs: ClassVar[tuple[str, ...]] = ("instruction", "code")

    def __init__(self, against: list[str] | None = None) -> None:
        super().__init__()
        self.against = list(against or [])

    def process_all(self, samples: list[Sample]) -> list[Sample]:
        seen: dict[tuple[str, str], tuple[str, str]] = {}
        for rid, instruction, code in previous_rows(self.against):
            seen.setdefault((normalise_instruction(instruction), normalise_code(code)),
                            ("earlier_run", f"earlier run's row {rid}"))
        for s in _ordered(samples):
            key = (normalise_instruction(s.instruction), normalise_code(s.code))
            if key in seen:
                origin, what = seen[key]
                s.reject(self.name, RejectReason.DUPLICATE,
                         f"same normalised instruction and code as {what}")
                self.counters[f"duplicate_of_{origin}"] += 1
                continue
            seen[key] = ("this_run", f"kept sample {s.id}")
        return samples


class MinHashDedupStep(GlobalStep):
    """Drops near-duplicate code by MinHash LSH (module docstring)."""

    name: ClassVar[str] = "dedup_minhash"
    inputs: ClassVar[tuple[str, ...]] = ("code",)

    def __init__(self, threshold: float, num_perm: int = 128,
                 against: list[str] | None = None) -> None:
        super().__init__()
        self.threshold = threshold
        self.num_perm = num_perm
        self.against = list(against or [])

    def process_all(self, samples: list[Sample]) -> list[Sample]:
        from pipeline.minhash import NearDuplicateIndex

        index = NearDuplicateIndex(threshold=self.threshold, num_perm=self.num_perm)
        owner: dict[str, tuple[int, str, str]] = {}  # key -> (order, origin, what)
        for rid, _, code in previous_rows(self.against):
            if code and rid not in owner:
                index.add(rid, code)
                owner[rid] = (len(owner), "earlier_run", f"earlier run's row {rid}")
        for s in _ordered(samples):
            if not s.code or s.id in owner:
                continue
            match = index.query(s.code)
            if match:
                _, origin, what = min(owner[k] for k in match)  # the earliest taken
                s.reject(self.name, RejectReason.DUPLICATE,
                         f"code near-duplicate (MinHash Jaccard >= {self.threshold}) of {what}")
                self.counters[f"duplicate_of_{origin}"] += 1
                continue
            index.add(s.id, s.code)
            owner[s.id] = (len(owner), "this_run", f"kept sample {s.id}")
        return samples
