"""The scoring stage: every live sample gets `loss`, `loss_alone`, `ifd` and
`response_tokens` in its scores (definitions in pipeline/scoring/scorer.py).

Per batch, in one `score` pool actor (the model is loaded once per actor, in `setup`). A
sample the scorer cannot score is rejected as `unscorable` with the reason; it is never
given a number. A sample that already carries scores from the same scorer (a rerun, or
`pipeline select` reusing a run's scores) is not scored again.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from pipeline.config import ScorerConfig
from pipeline.llm.cache import RequestCache, request_key
from pipeline.record import RejectReason, Sample
from pipeline.scoring.factory import build_scorer, scorer_name
from pipeline.scoring.scorer import Scorer, ScoreRequest
from pipeline.stage import Stage

log = logging.getLogger(__name__)

SCORE_KEYS = ("loss", "loss_alone", "ifd", "response_tokens", "score_truncated_tokens")


class ScoreStage(Stage):
    name: ClassVar[str] = "score"
    inputs: ClassVar[tuple[str, ...]] = ("instruction", "response")
    outputs: ClassVar[tuple[str, ...]] = ("scores",)
    pool: ClassVar[str] = "score"
    #: The model's threads use every core it is given.
    num_cpus: ClassVar[float] = 1.0

    def __init__(self, cfg: ScorerConfig, reuse: dict[str, dict[str, float]] | None = None
                 ) -> None:
        super().__init__()
        self.cfg = cfg
        self.batch_size = cfg.batch_size
        self.scorer_id = scorer_name(cfg)
        #: sample id -> scores made earlier by this same scorer (pipeline select).
        self.reuse = reuse or {}
        self._scorer: Scorer | None = None
        self._store: RequestCache | None = None

    def setup(self) -> None:
        """Nothing yet: the model loads with the first batch that needs it, so a rerun
        whose scores are all reused never loads it."""

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_store": None}  # opened in the worker, not shipped

    def _key(self, s: Sample) -> str:
        return request_key({"scorer": self.scorer_id, "instruction": s.instruction,
                            "response": s.response})

    def _from_store(self, todo: list[Sample]) -> list[Sample]:
        """Fill in scores stored by an earlier run (or before a crash); return the rest."""
        if self._store is None and self.cfg.cache and self.cfg.cache_path:
            self._store = RequestCache(self.cfg.cache_path)
        if self._store is None or not todo:
            return todo
        found = self._store.get_many([self._key(s) for s in todo])
        rest = []
        for s in todo:
            hit = found.get(self._key(s))
            if hit is None:
                rest.append(s)
                continue
            s.scores.update({k: hit[k] for k in SCORE_KEYS if k in hit})
            self.counters["scored"] += 1
            self.counters["scored_tokens"] += int(hit.get("response_tokens") or 0)
            self.counters["truncated"] += hit.get("score_truncated_tokens", 0) > 0
            self.counters["no_ifd"] += bool(hit.get("error"))
            self.counters["score_cached"] += 1
        return rest

    def teardown(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._scorer is not None:
            self._scorer.backend.close()
            self._scorer = None

    def process_batch(self, samples: list[Sample]) -> list[Sample]:
        todo = []
        for s in samples:
            old = self.reuse.get(s.id)
            if old is not None and "loss" in old:
                s.scores.update({k: old[k] for k in SCORE_KEYS if k in old})
                self.counters["reused"] += 1
            else:
                todo.append(s)
        todo = self._from_store(todo)
        if not todo:
            return samples
        if self._scorer is None:
            self._scorer = build_scorer(self.cfg)
        assert self._scorer is not None
        got = self._scorer.score([ScoreRequest(s.id, s.instruction, s.response) for s in todo])
        for s, sc in zip(todo, got, strict=True):
            if sc.loss is None:
                s.reject(self.name, RejectReason.UNSCORABLE, sc.error or "no loss")
                continue
            s.scores.update({k: float(v) for k, v in sc.to_dict().items()
                             if k in SCORE_KEYS and v is not None})
            if self._store is not None:
                self._store.put(self._key(s), {k: s.scores[k] for k in SCORE_KEYS
                                               if k in s.scores} | {"error": sc.error})
            self.counters["scored"] += 1
            self.counters["scored_tokens"] += sc.response_tokens or 0
            self.counters["truncated"] += sc.truncated_tokens > 0
            if sc.error:
                self.counters["no_ifd"] += 1
        return samples
