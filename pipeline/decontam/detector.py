"""The decontamination methods combined: one verdict per record.

For each record (`instruction`, optional `code`) and each method in `decontam.methods`:

- `ngram`: word n-gram containment of the instruction, and identifier-normalised token
  n-gram containment of the code, against every item (>= `ngram_threshold`).
- `embedding`: cosine of the instruction's all-MiniLM-L6-v2 embedding with each item's
  problem text (>= `embedding_threshold`), and of the code's with each item's reference
  solution (>= `code_embedding_threshold`).
- `execution`: the record's functions, bound to each benchmark entry point of the same
  arity, run against the item's own tests in the sandbox, then compared with the item's
  reference solution on altered inputs (`pipeline/decontam/probe_runtime.py`): passing
  the tests and agreeing on >= `execution_agreement` of those inputs is the same
  behaviour. Items nearest by the text methods are tried first.

A record is contaminated when any method fires. The verdict names the first that fired in
the order ngram, execution, embedding (a copy, then the same behaviour, then the same
meaning), with its benchmark, the item's own task id and the score; `evidence` keeps every
method's best item and score, fired or not, so a threshold can be re-tuned from the output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.decontam.benchmarks import BenchmarkItem, load_benchmarks
from pipeline.decontam.config import DecontamConfig
from pipeline.decontam.ngram import NgramIndex, code_words, words


@dataclass
class DecontamRecord:
    id: str
    instruction: str
    code: str = ""


@dataclass
class Verdict:
    contaminated: bool = False
    benchmark: str | None = None
    match: str | None = None
    method: str | None = None
    score: float | None = None
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"contaminated": self.contaminated, "benchmark": self.benchmark,
                "match": self.match, "method": self.method,
                "score": None if self.score is None else round(self.score, 4),
                "evidence": self.evidence}

    def short(self) -> dict[str, Any]:
        """What a rejected sample carries: benchmark, match, method, score."""
        return {k: v for k, v in self.to_dict().items() if k != "evidence"}


ORDER = ("ngram", "execution", "embedding")


def cache_dir() -> Path:
    from pipeline.llm.models import cache_dir as models_cache

    return models_cache().parent / "decontam"


class Decontaminator:
    """Loads the benchmarks and the methods' indexes once; `check` gives verdicts."""

    def __init__(self, cfg: DecontamConfig, sandbox: Any = None,
                 items: list[BenchmarkItem] | None = None, embedder: Any = None) -> None:
        self.cfg = cfg
        self.items = items if items is not None else load_benchmarks(cfg.benchmarks)
        self.sandbox = sandbox  # a pipeline.decontam.execution.ExecutionChecker
        self.methods = set(cfg.methods)
        self.text_index = self.code_index = None
        if "ngram" in self.methods:
            self.text_index = NgramIndex([i.instruction for i in self.items], cfg.text_ngram,
                                         words)
            self.code_index = NgramIndex([i.code for i in self.items], cfg.code_ngram,
                                         code_words)
        self.embedder = None
        if self.methods & {"embedding", "execution"}:
            from pipeline.decontam.embed import SentenceEmbedder, cached_encode

            self.embedder = embedder or SentenceEmbedder()
            self.text_matrix = cached_encode(self.embedder, [i.instruction for i in self.items],
                                             cache_dir())
            self.code_matrix = cached_encode(self.embedder, [i.code for i in self.items],
                                             cache_dir())

    def _item(self, i: int) -> dict[str, Any]:
        it = self.items[i]
        return {"benchmark": it.benchmark, "match": it.task_id}

    def check(self, records: list[DecontamRecord]) -> list[Verdict]:
        verdicts = [Verdict() for _ in records]
        near: list[list[int]] = [[] for _ in records]
        cfg = self.cfg
        if self.text_index is not None and self.code_index is not None:
            for r, v, nn in zip(records, verdicts, near, strict=True):
                sides = {"instruction": self.text_index.best(r.instruction),
                         "code": self.code_index.best(r.code) if r.code else None}
                found = {k: {**self._item(h.item), "score": h.score}
                         for k, h in sides.items() if h is not None}
                nn += [h.item for h in sides.values() if h is not None]
                if found:
                    v.evidence["ngram"] = self._best(found, {"instruction": cfg.ngram_threshold,
                                                             "code": cfg.ngram_threshold})
        if self.embedder is not None:
            self._embedding(records, verdicts, near)
        if "execution" in self.methods and self.sandbox is not None:
            runs = self.sandbox.check([(r.code, nn) for r, nn in zip(records, near,
                                                                       strict=True)],
                                      self.items)
            for v, hit, share in zip(verdicts, runs, self.sandbox.agreement, strict=True):
                if hit is not None:
                    v.evidence["execution"] = {**self._item(hit), "score": share,
                                               "fired": share >= cfg.execution_agreement}
        for v in verdicts:
            for method in ORDER:
                ev = v.evidence.get(method)
                if ev is not None and ev["fired"] and method in self.methods:
                    v.contaminated, v.benchmark, v.match = True, ev["benchmark"], ev["match"]
                    v.method, v.score = method, float(ev["score"])
                    break
        return verdicts

    def _embedding(self, records: list[DecontamRecord], verdicts: list[Verdict],
                   near: list[list[int]]) -> None:
        cfg = self.cfg
        assert self.embedder is not None
        k = cfg.execution_top_k
        text_sims = self.embedder.encode([r.instruction for r in records]) @ self.text_matrix.T
        with_code = [n for n, r in enumerate(records) if r.code]
        code_sims = np.zeros((len(records), len(self.items)), dtype=np.float32)
        if with_code:
            code_sims[with_code] = (self.embedder.encode([records[n].code for n in with_code])
                                    @ self.code_matrix.T)
        for n, v in enumerate(verdicts):
            top_text = np.argsort(-text_sims[n], kind="stable")[:k]
            top_code = np.argsort(-code_sims[n], kind="stable")[:k] if records[n].code else []
            near[n] += [int(i) for i in (*top_text, *top_code) if int(i) not in near[n]]
            found = {}
            if records[n].instruction:
                t = int(top_text[0])
                found["instruction"] = {**self._item(t), "score": float(text_sims[n, t])}
            if records[n].code:
                c = int(top_code[0])
                found["code"] = {**self._item(c), "score": float(code_sims[n, c])}
            if found:
                v.evidence["embedding"] = self._best(
                    found, {"instruction": cfg.embedding_threshold,
                            "code": cfg.code_embedding_threshold})

    @staticmethod
    def _best(found: dict[str, dict[str, Any]], thresholds: dict[str, float]
              ) -> dict[str, Any]:
        """A method's evidence: each side's nearest item and score, and the side that
        fired (instruction first) or else the higher-scoring one at the top level."""
        fired = [k for k in ("instruction", "code")
                 if k in found and found[k]["score"] >= thresholds[k]]
        top = fired[0] if fired else max(found, key=lambda k: found[k]["score"])
        return {**found[top], "on": top, "fired": bool(fired), **found}
