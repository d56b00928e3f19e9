"""Decontamination on a hand-written evaluation set: recall per kind, false-positive rate.

The set (benchmarks/data/decontam/*.jsonl, written by hand for this benchmark):
- rewrites of HumanEval and MBPP problems, four kinds: `reworded_instruction`,
  `reworded_with_code` (renamed, reformatted code), `code_alone` (the code with an
  instruction that does not describe it), `user_request` (the problem retold as a user's
  request); each labelled with the benchmark and task id it restates;
- clean tasks: `clean` (ordinary) and `hard_negative` (the topic and words of one
  benchmark item, another problem; with code, that code fails the item's tests).

Each record is in the `tune` or the `test` half by the parity of sha256(id); thresholds
are chosen on `tune` (`--split tune --sweep` prints the candidates) and the figures to
quote are from `test`. Every method's evidence is computed once (all methods on), then
each method alone and the combination decide at the configured thresholds
(pipeline/decontam/config.py). A rewrite counts as found when flagged; "right item" is the
share flagged with the labelled benchmark task.

    PYTHONPATH=. python benchmarks/decontam.py [--split test|tune|all] [--sweep]
        [--no-execution]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pipeline.config import SandboxConfig
from pipeline.decontam.config import DecontamConfig
from pipeline.decontam.detector import Decontaminator, DecontamRecord, Verdict

DATA = Path(__file__).resolve().parent / "data" / "decontam"
CLEAN_KINDS = ("clean", "hard_negative")


def split_of(rec_id: str) -> str:
    return "tune" if hashlib.sha256(rec_id.encode()).digest()[0] % 2 == 0 else "test"


def load_set(split: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for p in sorted(DATA.glob("*.jsonl"))
            for line in p.read_text().splitlines() if line.strip()]
    return [r for r in rows if split == "all" or split_of(r["id"]) == split]


def fires(v: Verdict, method: str, cfg: DecontamConfig) -> dict[str, Any] | None:
    """The item `method` flags at `cfg`'s thresholds (re-decided from the evidence)."""
    ev = v.evidence.get(method)
    if ev is None:
        return None
    if method == "execution":
        return ev if ev["score"] >= cfg.execution_agreement else None
    th = {"ngram": (cfg.ngram_threshold, cfg.ngram_threshold),
          "embedding": (cfg.embedding_threshold, cfg.code_embedding_threshold)}[method]
    for side, t in zip(("instruction", "code"), th, strict=True):
        if side in ev and ev[side]["score"] >= t:
            return ev[side]
    return None


def decide(v: Verdict, methods: tuple[str, ...], cfg: DecontamConfig) -> dict[str, Any] | None:
    for m in ("ngram", "execution", "embedding"):
        if m in methods and (hit := fires(v, m, cfg)) is not None:
            return hit
    return None


def table(rows: list[dict[str, Any]], verdicts: list[Verdict], cfg: DecontamConfig,
          methods: tuple[str, ...]) -> dict[str, Any]:
    found: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # kind -> [n, hit, right]
    for r, v in zip(rows, verdicts, strict=True):
        hit = decide(v, methods, cfg)
        c = found[r["kind"]]
        c[0] += 1
        c[1] += hit is not None
        c[2] += hit is not None and (hit["benchmark"], hit["match"]) == (r["benchmark"],
                                                                           r["match"])
    return {"methods": "+".join(methods), **rates(found)}


def rates(found: dict[str, list[int]]) -> dict[str, Any]:
    """Recall per rewrite kind, right-item share and false-positive rates from
    kind -> [records, flagged, flagged with the labelled item]."""
    rewrites = sorted(k for k in found if k not in CLEAN_KINDS)
    n_rw = sum(found[k][0] for k in rewrites)
    n_clean = sum(found[k][0] for k in CLEAN_KINDS if k in found)
    out: dict[str, Any] = {}
    for k in rewrites:
        out[f"recall_{k}"] = round(found[k][1] / found[k][0], 3)
    out["recall"] = round(sum(found[k][1] for k in rewrites) / max(n_rw, 1), 3)
    out["right_item"] = round(sum(found[k][2] for k in rewrites) / max(n_rw, 1), 3)
    for k in CLEAN_KINDS:
        if k in found:
            out[f"fp_{k}"] = round(found[k][1] / found[k][0], 3)
    out["fp_rate"] = round(sum(found[k][1] for k in CLEAN_KINDS if k in found)
                           / max(n_clean, 1), 3)
    out["n_rewrites"], out["n_clean"] = n_rw, n_clean
    return out


def sweep(rows: list[dict[str, Any]], verdicts: list[Verdict], cfg: DecontamConfig) -> None:
    """Candidate thresholds (tune split): recall and FP for each, one method at a time."""
    grid = {"execution_agreement": [0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
            "ngram_threshold": [0.3, 0.4, 0.5, 0.6, 0.7],
            "embedding_threshold": [0.6, 0.65, 0.7, 0.72, 0.75, 0.78, 0.8, 0.85],
            "code_embedding_threshold": [0.85, 0.9, 0.92, 0.95, 0.97]}
    for key, values in grid.items():
        method = key.split("_")[0].replace("code", "embedding")
        for val in values:
            c = cfg.model_copy(update={key: val})
            if key == "embedding_threshold":
                c = c.model_copy(update={"code_embedding_threshold": 1.0})
            if key == "code_embedding_threshold":
                c = c.model_copy(update={"embedding_threshold": 1.0})
            t = table(rows, verdicts, c, (method,))
            print(json.dumps({"sweep": key, "value": val, "recall": t["recall"],
                              "fp_rate": t["fp_rate"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="test", choices=("test", "tune", "all"))
    ap.add_argument("--sweep", action="store_true", help="print threshold candidates")
    ap.add_argument("--no-execution", action="store_true", help="leave the sandbox out")
    args = ap.parse_args()
    rows = load_set(args.split)
    cfg = DecontamConfig()
    if args.no_execution:
        cfg = cfg.model_copy(update={"methods": ["ngram", "embedding"]})
    records = [DecontamRecord(r["id"], r.get("instruction") or "", r.get("code") or "")
               for r in rows]
    pool = checker = None
    t_load = time.perf_counter()
    if "execution" in cfg.methods:
        from pipeline.decontam.execution import ExecutionChecker, probe_sandbox
        from pipeline.sandbox.pool import SandboxPool

        pool = SandboxPool(probe_sandbox(SandboxConfig()))
        pool.start()
        checker = ExecutionChecker(pool)
    try:
        det = Decontaminator(cfg, sandbox=checker)
        t_load = time.perf_counter() - t_load
        text = cfg.model_copy(update={"methods": ["ngram", "embedding"]})
        det.methods = set(text.methods)
        t0 = time.perf_counter()
        det.check(records)
        t_text = time.perf_counter() - t0
        det.methods = set(cfg.methods)
        t0 = time.perf_counter()
        verdicts = det.check(records)
        t_all = time.perf_counter() - t0
    finally:
        if pool is not None:
            pool.close()
    print(json.dumps({"split": args.split, "records": len(rows),
                      "benchmark_items": len(det.items), "load_s": round(t_load, 1),
                      "records_per_s_text_methods": round(len(rows) / t_text, 1),
                      "records_per_s_all_methods": round(len(rows) / t_all, 1),
                      "execution": dict(checker.counters) if checker else None}))
    for methods in (("ngram",), ("embedding",), ("execution",), tuple(cfg.methods)):
        if set(methods) <= set(cfg.methods):
            print(json.dumps(table(rows, verdicts, cfg, methods)))
    if args.sweep:
        sweep(rows, verdicts, cfg)
    errors = []
    for r, v in zip(rows, verdicts, strict=True):
        hit = decide(v, tuple(cfg.methods), cfg)
        if (hit is None) != (r["kind"] in CLEAN_KINDS):
            errors.append([r["id"], r["kind"], r.get("match") or r.get("near"),
                           hit and f"{hit['benchmark']}:{hit['match']}"])
    print(json.dumps({"errors (id, kind, labelled or near item, flagged as)": errors}))

if __name__ == "__main__":
    main()
