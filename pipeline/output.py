"""Write a run's results: the dataset, the rejected samples and stats.json.

`DIR/dataset` is a `datasets.DatasetDict` (split `train`) whose `messages` column loads
straight into TRL's SFTTrainer; `DIR/rejected` holds every dropped sample with its stage
and reason; `DIR/stats.json` counts everything. Each is written to a temp path and moved
into place, so an interrupted write never leaves half a dataset behind.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import datasets

from pipeline.record import Sample

datasets.disable_progress_bars()

_EXEC = {
    "status": datasets.Value("string"),
    "duration_s": datasets.Value("float64"),
    "tests_passed": datasets.Value("int64"),
    "tests_total": datasets.Value("int64"),
}
_MSG = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]

DATASET_FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "messages": _MSG,
    "instruction": datasets.Value("string"),
    "response": datasets.Value("string"),
    "code": datasets.Value("string"),
    "tests": datasets.Value("string"),
    "language": datasets.Value("string"),
    "strategy": datasets.Value("string"),
    "parent_id": datasets.Value("string"),
    "seed_ref": datasets.Value("string"),
    "round": datasets.Value("int64"),
    "kind": datasets.Value("string"),
    "op": datasets.Value("string"),
    "execution": _EXEC,
    "scores": [{"name": datasets.Value("string"), "value": datasets.Value("float64")}],
    # The scoring stage's figures as columns (null when select.enabled is off).
    "loss": datasets.Value("float64"),
    "loss_alone": datasets.Value("float64"),
    "ifd": datasets.Value("float64"),
    "response_tokens": datasets.Value("int64"),
    "model": datasets.Value("string"),
})

REJECTED_FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "stage": datasets.Value("string"),
    "reason": datasets.Value("string"),
    "detail": datasets.Value("string"),
    "strategy": datasets.Value("string"),
    "parent_id": datasets.Value("string"),
    "seed_ref": datasets.Value("string"),
    "instruction": datasets.Value("string"),
    "response": datasets.Value("string"),
    "code": datasets.Value("string"),
    "tests": datasets.Value("string"),
    "execution": _EXEC,
    "scores": [{"name": datasets.Value("string"), "value": datasets.Value("float64")}],
    # Set for reason `contaminated`: the benchmark, its own task id, the method, its score.
    "contamination": {"benchmark": datasets.Value("string"), "match": datasets.Value("string"),
                      "method": datasets.Value("string"), "score": datasets.Value("float64")},
    "model": datasets.Value("string"),
})


def _scores(s: Sample) -> list[dict[str, Any]]:
    return [{"name": k, "value": float(v)} for k, v in sorted(s.scores.items())]


def _execution(s: Sample) -> dict[str, Any] | None:
    if s.execution is None:
        return None
    e = s.execution
    return {"status": e.status.value, "duration_s": e.duration_s,
            "tests_passed": e.tests_passed, "tests_total": e.tests_total}


def dataset_row(s: Sample) -> dict[str, Any]:
    """One kept sample as a dataset row in chat format."""
    return {
        "id": s.id,
        "messages": [{"role": "user", "content": s.instruction},
                     {"role": "assistant", "content": s.response}],
        "instruction": s.instruction, "response": s.response, "code": s.code,
        "tests": s.tests, "language": s.language, "strategy": s.strategy,
        "parent_id": s.parent_id, "seed_ref": s.seed_ref, "round": s.round, "kind": s.kind,
        "op": s.op,
        "execution": _execution(s),
        "scores": _scores(s),
        "loss": s.scores.get("loss"), "loss_alone": s.scores.get("loss_alone"),
        "ifd": s.scores.get("ifd"),
        "response_tokens": (int(s.scores["response_tokens"]) if "response_tokens" in s.scores
                            else None),
        "model": s.model,
    }


def rejected_row(s: Sample) -> dict[str, Any]:
    """One dropped sample with the stage and reason that dropped it."""
    return {
        "id": s.id, "stage": s.reject_stage,
        "reason": s.reject_reason.value if s.reject_reason else None,
        "detail": s.reject_detail, "strategy": s.strategy, "parent_id": s.parent_id,
        "seed_ref": s.seed_ref, "instruction": s.instruction, "response": s.response,
        "code": s.code, "tests": s.tests, "execution": _execution(s), "scores": _scores(s),
        "contamination": _contamination(s), "model": s.model,
    }


def _contamination(s: Sample) -> dict[str, Any] | None:
    c = s.contamination
    if not c or not c.get("contaminated"):
        return None
    return {"benchmark": c.get("benchmark"), "match": c.get("match"),
            "method": c.get("method"), "score": c.get("score")}


def _to_dataset(rows: list[dict[str, Any]], features: datasets.Features) -> datasets.Dataset:
    # from_list([]) loses the schema; an empty split must still have every column.
    if not rows:
        return datasets.Dataset.from_dict({k: [] for k in features}, features=features)
    return datasets.Dataset.from_list(rows, features=features)


def _save(obj: datasets.Dataset | datasets.DatasetDict, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # datasets writes zero shards for an empty split and then cannot load it back.
    if isinstance(obj, datasets.DatasetDict):
        shards = {k: 1 for k, v in obj.items() if v.num_rows == 0} or None
        if shards:
            shards = {k: shards.get(k, max(1, v.num_rows // 100_000)) for k, v in obj.items()}
    else:
        shards = 1 if obj.num_rows == 0 else None
    obj.save_to_disk(str(tmp), num_shards=shards)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def dedupe(samples: list[Sample]) -> list[Sample]:
    """Drop repeated ids (the same content generated twice), keeping the first."""
    seen: set[str] = set()
    out = []
    for s in samples:
        if s.id in seen:
            continue
        seen.add(s.id)
        out.append(s)
    return out


def kept_samples(samples: list[Sample]) -> list[Sample]:
    """The samples that make the dataset: live ones, each id once, in id order."""
    return [s for s in sorted(dedupe(samples), key=lambda s: s.id) if not s.rejected]


#: Every sample that reached the scoring stage (kept, not selected, unscorable), whole, so
#: that `pipeline select --from RUN_DIR` can redo the cut without regenerating.
CANDIDATES = "candidates.jsonl"


def write_candidates(out_dir: Path, samples: list[Sample]) -> int:
    """Write CANDIDATES under `out_dir` (atomically); return how many."""
    chosen = [s for s in sorted(dedupe(samples), key=lambda s: s.id)
              if not s.rejected or s.reject_stage in ("score", "select")]
    tmp = out_dir / (CANDIDATES + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for s in chosen:
            f.write(json.dumps(s.to_dict(), ensure_ascii=False) + "\n")
    tmp.replace(out_dir / CANDIDATES)
    return len(chosen)


def write_outputs(out_dir: Path, samples: list[Sample], stats: dict[str, Any]) -> dict[str, Any]:
    """Write dataset, rejected and stats.json under `out_dir`; return the stats written."""
    samples = sorted(dedupe(samples), key=lambda s: s.id)
    kept = kept_samples(samples)
    dropped = [s for s in samples if s.rejected]
    train = _to_dataset([dataset_row(s) for s in kept], DATASET_FEATURES)
    _save(datasets.DatasetDict({"train": train}), out_dir / "dataset")
    rej = _to_dataset([rejected_row(s) for s in dropped], REJECTED_FEATURES)
    _save(rej, out_dir / "rejected")
    reasons = Counter(f"{s.reject_stage}/{s.reject_reason.value}" for s in dropped
                      if s.reject_reason)
    tokens: dict[str, int] = {}
    for s in samples:
        for k, v in s.tokens.items():
            tokens[k] = tokens.get(k, 0) + int(v)
    stats = {**stats, "kept": len(kept), "rejected": len(dropped),
             "rejected_by_reason": dict(sorted(reasons.items())), "tokens": tokens,
             "kept_by_strategy": dict(Counter(s.strategy for s in kept))}
    if stats.get("seeds"):
        stats["yield"] = round(len(kept) / stats["seeds"], 3)
    tmp = out_dir / "stats.json.tmp"
    tmp.write_text(json.dumps(stats, indent=2, sort_keys=False) + "\n")
    tmp.replace(out_dir / "stats.json")
    return stats
