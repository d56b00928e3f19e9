"""Retrieve-then-judge decontamination on the hand-written set: can the embedded LLM tell
a paraphrased benchmark problem from a look-alike?

For each record of benchmarks/data/decontam/*.jsonl (the set and the tune/test halves of
benchmarks/decontam.py), the k benchmark items (HumanEval + all of MBPP) nearest by
all-MiniLM-L6-v2 cosine of the instruction are retrieved; each (record, item) pair is put
to Qwen2.5-Coder-0.5B-Instruct (the embedded default, llama.cpp, one thread) with
prompts/decontam_judge.jinja2: "are these the same problem? yes or no". The pair's score
is P(yes) / (P(yes) + P(no)) for the reply's first token (temperature-free, read from the
logits). A record is flagged when its best pair scores >= the threshold; the flagged item
is that best pair's.

Output (JSON lines):
- `retrieval`: per split, recall@k of the retrieval alone per rewrite kind (is the
  labelled item among the k at all?) — an upper bound on the judge's "right item".
- `sweep`: on tune, recall and false-positive rate of each candidate threshold.
- `threshold`: the chosen one: the lowest candidate whose tune false-positive rate is
  <= 2% (the issue's limit), or, when none is, the one with the fewest false positives.
- `table`: per split at that threshold, as benchmarks/decontam.py prints it (recall per
  kind, `right_item` = share of rewrites flagged with the labelled item, fp per clean
  kind, overall). Quote `test`; `tune` chose the threshold.
- `separation`: per split, AUC of the records' best judged score, rewrites against clean
  tasks (0.5 = no separation; the text-only kinds separately) and score quantiles.
- `ranking`: of the rewrites whose labelled item was retrieved, how often the judge's best
  pair is that item, against how often the cosine's first item is (chance is about 1/k).
- `pairs`: judge scores of (rewrite, labelled item) pairs against all other pairs (AUC and
  quantiles) — does the judge tell the right item from a wrong one at all?
- `timing`: seconds of judge compute per judged pair (the k prompts of one record share
  their prefix in llama.cpp's KV cache, so this is the per-record cost divided by k).

Judge scores are cached in $PIPELINE_CACHE_DIR/decontam_judge/scores.json (default
~/.cache/pipeline/decontam_judge/), keyed by the sha256 of the model's sha256 and the full
chat prompt, so a rerun only computes what changed.

    PYTHONPATH=. .venv/bin/python benchmarks/decontam_judge.py [--split tune|test|all]
        [--k 3] [--limit N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from benchmarks.decontam import CLEAN_KINDS, load_set, rates, split_of
from pipeline.decontam.benchmarks import BenchmarkItem, load_benchmarks
from pipeline.decontam.detector import cache_dir as decontam_cache
from pipeline.llm.models import EMBEDDED_MODELS, model_file
from pipeline.llm.models import cache_dir as models_cache
from pipeline.prompts import render

MODEL = "qwen2.5-coder-0.5b"
TEMPLATE = "decontam_judge.jinja2"
YES, NO = ("yes", "Yes", "YES"), ("no", "No", "NO")
FP_LIMIT = 0.02
TEXT_KINDS = ("reworded_instruction", "user_request")  # no code: what no method finds
SWEEP_ROWS = 15


def score_cache() -> Path:
    return models_cache().parent / "decontam_judge" / "scores.json"


class PairJudge:
    """Qwen2.5-Coder-0.5B through llama.cpp: `score(user_message)` -> P(yes) among yes/no."""

    def __init__(self, cache: Path) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(model_file(MODEL)), n_ctx=2048, n_threads=1,
                         n_threads_batch=1, verbose=False)
        # The chat format the GGUF declares, rendered as llama-cpp-python's chat handler
        # renders it, so the prompt is what create_chat_completion would send.
        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
        self.chat = env.from_string(self.llm.metadata["tokenizer.chat_template"])
        ids = {w: self.llm.tokenize(w.encode(), add_bos=False) for w in YES + NO}
        self.yes = [t[0] for w, t in ids.items() if w in YES and len(t) == 1]
        self.no = [t[0] for w, t in ids.items() if w in NO and len(t) == 1]
        self.model_sha = EMBEDDED_MODELS[MODEL].sha256
        self.cache_path = cache
        self.cache: dict[str, dict[str, float]] = (json.loads(cache.read_text())
                                                   if cache.is_file() else {})
        self.computed = 0
        self.seconds = 0.0
        self.pair_seconds: list[float] = []  # of every pair scored, cached ones included

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_sha}\n{text}".encode()).hexdigest()

    def score(self, message: str) -> float:
        text = self.chat.render(messages=[{"role": "user", "content": message}],
                                add_generation_prompt=True)
        key = self.key(text)
        if key in self.cache:
            self.pair_seconds.append(self.cache[key].get("seconds", float("nan")))
            return self.cache[key]["p_yes"]
        from llama_cpp import LogitsProcessorList

        t0 = time.perf_counter()
        tokens = self.llm.tokenize(text.encode(), add_bos=False, special=True)
        if len(tokens) >= self.llm.n_ctx():
            raise ValueError(f"judge prompt of {len(tokens)} tokens exceeds n_ctx "
                             f"{self.llm.n_ctx()}")
        seen: list[np.ndarray] = []

        def grab(_ids: Any, logits: np.ndarray) -> np.ndarray:
            seen.append(np.array(logits, dtype=np.float64))
            return logits

        # generate() reuses the KV cache of the previous prompt's common prefix (the
        # candidate's part), then evaluates the rest; only the first token's logits count.
        for _ in self.llm.generate(tokens, temp=0.0, reset=True,
                                   logits_processor=LogitsProcessorList([grab])):
            break
        logits = seen[0]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        p_yes, p_no = float(p[self.yes].sum()), float(p[self.no].sum())
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        self.computed += 1
        self.cache[key] = {"p_yes": p_yes / max(p_yes + p_no, 1e-30),
                           "mass": p_yes + p_no, "seconds": seconds}
        self.pair_seconds.append(seconds)
        return self.cache[key]["p_yes"]

    def save(self) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.cache))
        os.replace(tmp, self.cache_path)


def retrieve(rows: list[dict[str, Any]], items: list[BenchmarkItem], k: int
             ) -> list[list[tuple[int, float]]]:
    """The k items nearest to each record's instruction by MiniLM cosine."""
    from pipeline.decontam.embed import SentenceEmbedder, cached_encode

    emb = SentenceEmbedder(threads=1)
    matrix = cached_encode(emb, [i.instruction for i in items], decontam_cache())
    sims = emb.encode([r.get("instruction") or "" for r in rows]) @ matrix.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return [[(int(i), float(sims[n, i])) for i in top[n]] for n in range(len(rows))]


def is_right(r: dict[str, Any], item: BenchmarkItem) -> bool:
    return (item.benchmark, item.task_id) == (r["benchmark"], r["match"])


def table(rows: list[dict[str, Any]], best: list[tuple[int, float]],
          items: list[BenchmarkItem], threshold: float) -> dict[str, Any]:
    found: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # kind -> [n, hit, right]
    for r, (i, s) in zip(rows, best, strict=True):
        c = found[r["kind"]]
        c[0] += 1
        c[1] += s >= threshold
        c[2] += s >= threshold and r["kind"] not in CLEAN_KINDS and is_right(r, items[i])
    return {"threshold": threshold, **rates(found)}


def recall_at_k(rows: list[dict[str, Any]], near: list[list[tuple[int, float]]],
                items: list[BenchmarkItem]) -> dict[str, Any]:
    hit: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r, nn in zip(rows, near, strict=True):
        if r["kind"] in CLEAN_KINDS:
            continue
        hit[r["kind"]][0] += 1
        hit[r["kind"]][1] += any(is_right(r, items[i]) for i, _ in nn)
    out = {f"recall_at_k_{k}": round(h / n, 3) for k, (n, h) in sorted(hit.items())}
    out["recall_at_k"] = round(sum(h for _, h in hit.values())
                               / max(sum(n for n, _ in hit.values()), 1), 3)
    return out


def auc(pos: list[float], neg: list[float]) -> float | None:
    """P(a random `pos` score > a random `neg` one), ties half: 0.5 is no separation."""
    if not pos or not neg:
        return None
    p, n = np.array(pos)[:, None], np.array(neg)[None, :]
    return round(float((p > n).mean() + 0.5 * (p == n).mean()), 3)


def quantiles(values: list[float]) -> list[float] | None:
    if not values:
        return None
    return [round(float(np.quantile(values, p)), 3) for p in (0.1, 0.5, 0.9)]


def choose(rows: list[dict[str, Any]], best: list[tuple[int, float]],
           items: list[BenchmarkItem]) -> float:
    # The candidates are the tune records' own best scores (a 0.5B judge's scores bunch
    # in a narrow band, so a fixed grid would step over it); a spread of them is printed.
    cands = sorted({round(s, 4) for _, s in best} | {1.0})
    tables = [table(rows, best, items, t) for t in cands]
    step = max(len(tables) // SWEEP_ROWS, 1)
    for t in tables[::step]:
        print(json.dumps({"sweep": "tune", **{k: t[k] for k in ("threshold", "recall",
                                                                  "right_item", "fp_rate")}}))
    ok = [t for t in tables if t["fp_rate"] <= FP_LIMIT]
    if ok:
        return ok[0]["threshold"]
    return min(tables, key=lambda t: (t["fp_rate"], -t["recall"]))["threshold"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="all", choices=("tune", "test", "all"))
    ap.add_argument("--k", type=int, default=3, help="benchmark items judged per record")
    ap.add_argument("--limit", type=int, default=None,
                    help="judge only the first N records in sha256(id) order (a mix of "
                    "kinds); the tables then cover those N")
    ap.add_argument("--threshold", type=float, default=None,
                    help="use this threshold instead of choosing one on tune")
    args = ap.parse_args()
    rows = sorted(load_set(args.split), key=lambda r: hashlib.sha256(r["id"].encode())
                  .hexdigest())[:args.limit]
    items = load_benchmarks(["humaneval", "mbpp"])
    near = retrieve(rows, items, args.k)
    judge = PairJudge(score_cache())
    scores: list[list[float]] = []
    t_start = time.perf_counter()
    try:
        for n, (r, nn) in enumerate(zip(rows, near, strict=True)):
            scores.append([judge.score(render(TEMPLATE, instruction=r.get("instruction") or "",
                                              code=r.get("code") or "",
                                              problem=items[i].instruction))
                           for i, _ in nn])
            if judge.computed and (n + 1) % 10 == 0:
                judge.save()
                print(json.dumps({"progress": n + 1, "of": len(rows),
                                  "elapsed_s": round(time.perf_counter() - t_start, 1)}),
                      flush=True)
    finally:
        judge.save()
    best = [max(zip((i for i, _ in nn), sc, strict=True), key=lambda p: p[1])
            for nn, sc in zip(near, scores, strict=True)]
    halves = {s: [n for n, r in enumerate(rows) if split_of(r["id"]) == s]
              for s in ("tune", "test")}
    halves = {s: idx for s, idx in halves.items() if idx}

    def pick(idx: list[int], seq: list[Any]) -> list[Any]:
        return [seq[n] for n in idx]

    for s, idx in halves.items():
        print(json.dumps({"retrieval": s, "k": args.k,
                          **recall_at_k(pick(idx, rows), pick(idx, near), items)}))
    threshold = args.threshold
    how = "given"
    if threshold is None and "tune" in halves:
        idx = halves["tune"]
        threshold, how = choose(pick(idx, rows), pick(idx, best), items), "chosen on tune"
    if threshold is None:
        threshold, how = 0.5, "default (no tune records judged; pass --threshold)"
    print(json.dumps({"threshold": threshold, "how": how}))
    for s, idx in halves.items():
        print(json.dumps({"table": s, "records": len(idx),
                          **table(pick(idx, rows), pick(idx, best), items, threshold)}))
    right, other = [], []
    judge_pick = cosine_pick = retrieved = 0
    for r, nn, sc, (b, _) in zip(rows, near, scores, best, strict=True):
        for (i, _), x in zip(nn, sc, strict=True):
            (right if r["kind"] not in CLEAN_KINDS and is_right(r, items[i]) else other
             ).append(x)
        if r["kind"] not in CLEAN_KINDS and any(is_right(r, items[i]) for i, _ in nn):
            retrieved += 1
            judge_pick += is_right(r, items[b])
            cosine_pick += is_right(r, items[nn[0][0]])
    for s, idx in halves.items():
        rw = [best[n][1] for n in idx if rows[n]["kind"] not in CLEAN_KINDS]
        text = [best[n][1] for n in idx if rows[n]["kind"] in TEXT_KINDS]
        clean = [best[n][1] for n in idx if rows[n]["kind"] in CLEAN_KINDS]
        hard = [best[n][1] for n in idx if rows[n]["kind"] == "hard_negative"]
        print(json.dumps({"separation": s, "auc_rewrites_vs_clean": auc(rw, clean),
                          "auc_text_only_vs_clean": auc(text, clean),
                          "auc_text_only_vs_hard_negative": auc(text, hard),
                          "best_score_q_rewrites": quantiles(rw),
                          "best_score_q_clean": quantiles(clean)}))
    print(json.dumps({"ranking": "rewrites whose labelled item was retrieved",
                      "n": retrieved, "judge_best_is_labelled": judge_pick,
                      "cosine_top1_is_labelled": cosine_pick}))
    print(json.dumps({"pairs": "judge score quantiles (10/50/90%)", "auc": auc(right, other),
                      "right_item_pairs": len(right), "right_item_q": quantiles(right),
                      "other_pairs": len(other), "other_q": quantiles(other),
                      "other_share_ge_0.5": round(float(np.mean(np.array(other) >= 0.5)), 3)
                      if other else None}))
    secs = np.array(judge.pair_seconds)
    print(json.dumps({"timing": "judge", "pairs": len(secs), "computed_now": judge.computed,
                      "seconds_now": round(judge.seconds, 1),
                      # as measured when each score was computed (cached ones included)
                      "seconds_per_pair": round(float(np.nanmean(secs)), 2)
                      if len(secs) else None,
                      "seconds_total": round(float(np.nansum(secs)), 1), "threads": 1}))


if __name__ == "__main__":
    main()
