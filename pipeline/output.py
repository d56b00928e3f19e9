"""Write a run's results: the dataset, the rejected samples and stats.json.

`DIR/dataset` is a `datasets.DatasetDict` (splits `train` and, unless
`output.validation_share` is 0, `validation`, dealt by a hash of the id: see
pipeline/output_build.py) whose `messages` column loads straight into TRL's SFTTrainer;
`DIR/rejected` holds every dropped sample with its stage and reason; `DIR/stats.json`
counts everything. Each is written to a temp path and moved into place, so an interrupted
write never leaves half a dataset behind.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import datasets

from pipeline.config import OutputConfig
from pipeline.output_build import (
    Collector,
    assemble,
    save,
    split_keys,
    tag_counts,
    unique_sorted,
)
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


#: Every sample that reached the scoring stage (kept, not selected, unscorable), whole, so
#: that `pipeline select --from RUN_DIR` can redo the cut without regenerating.
CANDIDATES = "candidates.jsonl"

_CANDIDATE_FEATURES = datasets.Features({"id": datasets.Value("string"),
                                         "json": datasets.Value("string")})


def _is_candidate(s: Sample) -> bool:
    return not s.rejected or s.reject_stage in ("score", "select")


def _stable_content(d: dict[str, Any]) -> str:
    """A sample's content without what differs between two identical runs (execution
    time): of rows with one id, the collectors keep the one whose content hashes lowest,
    and that must not depend on how fast a sandbox was."""
    execution = d.get("execution")
    if isinstance(execution, dict) and "duration_s" in execution:
        d = {**d, "execution": {k: v for k, v in execution.items() if k != "duration_s"}}
    return json.dumps(d, ensure_ascii=False, sort_keys=True)


def write_outputs(out_dir: Path, samples: Iterable[Sample], stats: dict[str, Any], *,
                  candidates: bool = False,
                  output: OutputConfig | None = None) -> dict[str, Any]:
    """Write dataset, rejected (and CANDIDATES) and stats.json under `out_dir`, streaming
    `samples` once (pipeline/output_build.py: bounded memory, one row per id, id order).
    `output` (default: the config's defaults) gives the validation share. Returns the
    stats written: `kept` counts every split, `kept_by_split` each."""
    share = (output or OutputConfig()).validation_share
    build = out_dir / "state" / "build"
    shutil.rmtree(build, ignore_errors=True)
    kept = Collector(build / "kept", DATASET_FEATURES)
    dropped = Collector(build / "rejected", REJECTED_FEATURES)
    cands = Collector(build / "candidates", _CANDIDATE_FEATURES) if candidates else None
    tokens: Counter[str] = Counter()
    for s in samples:
        for k, v in s.tokens.items():
            tokens[k] += int(v)
        d = s.to_dict()
        blob = json.dumps(d, ensure_ascii=False, sort_keys=True)
        key = _stable_content(d)
        if s.rejected:
            dropped.add(rejected_row(s), f"{s.reject_stage}/{s.reject_reason.value}"
                        if s.reject_reason else "", key)
        else:
            kept.add(dataset_row(s), s.strategy, key)
        if cands is not None and _is_candidate(s):
            cands.add({"id": s.id, "json": blob}, "", key)
    cache = build / "hf"
    keep_kept = unique_sorted(kept.keys())
    # An id kept once is kept: its rejected copies (the same content, another path) go.
    keep_dropped = unique_sorted(dropped.keys(), exclude=keep_kept.column("id"))
    splits = split_keys(keep_kept, share)
    save(datasets.DatasetDict({name: assemble(kept, keys, cache) for name, keys in splits.items()}),
         out_dir / "dataset")
    save(assemble(dropped, keep_dropped, cache), out_dir / "rejected")
    if cands is not None:
        stats = {**stats, "candidates": _write_candidates(out_dir, cands, cache)}
    reasons = tag_counts(keep_dropped)
    stats = {**stats, "kept": keep_kept.num_rows, "rejected": keep_dropped.num_rows,
             "rejected_by_reason": dict(sorted(reasons.items())), "tokens": dict(tokens),
             "kept_by_strategy": dict(sorted(tag_counts(keep_kept).items())),
             "kept_by_split": {name: keys.num_rows for name, keys in splits.items()},
             "kept_by_split_strategy": {name: dict(sorted(tag_counts(keys).items()))
                                        for name, keys in splits.items()}}
    if stats.get("seeds"):
        stats["yield"] = round(keep_kept.num_rows / stats["seeds"], 3)
    tmp = out_dir / "stats.json.tmp"
    tmp.write_text(json.dumps(stats, indent=2, sort_keys=False) + "\n")
    tmp.replace(out_dir / "stats.json")
    shutil.rmtree(build, ignore_errors=True)
    return stats


def _write_candidates(out_dir: Path, cands: Collector, cache: Path) -> int:
    keep = unique_sorted(cands.keys())
    tmp = out_dir / (CANDIDATES + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        if keep.num_rows:
            for batch in assemble(cands, keep, cache).iter(batch_size=1024):
                for blob in batch["json"]:
                    f.write(blob + "\n")
    tmp.replace(out_dir / CANDIDATES)
    return keep.num_rows
