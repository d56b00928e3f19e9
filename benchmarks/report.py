"""The run report at scale: `pipeline.report.write_report` on a synthetic 1M-sample run.

Builds, deterministically from --seed, the output directory of a run with --rows samples
in the layout `pipeline run` writes: OUT/dataset (a DatasetDict, splits train and
validation, rows in id order) and OUT/rejected with `pipeline.output`'s DATASET_FEATURES and
REJECTED_FEATURES, split and saved with `pipeline.output_build`, and a stats.json with the
counters a run of that size has: six strategies, half the rows kept, the rest dropped at
every stage for the usual reasons, losses and IFDs of kept and not-selected rows, execution
times, transformation variants whose parent is in the output, a few very long code
samples. Then, in a fresh process, times `write_report` and prints one JSON line: build
seconds (wall and CPU), the HTML size in bytes, the peak RSS of that process, and how much
of its memory at the end is the memory-mapped files (page cache, `rss_file_mb`) rather
than its own (`rss_anon_mb`). The goal: at most 10 s and 2 MB for 1M rows.

    python benchmarks/report.py [--rows 1000000] [--seed 0] [--out DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

STRATEGIES = {"oss_instruct": 0.36, "self_instruct": 0.2, "evol_instruct": 0.2,
              "case2code": 0.12, "fix_bug": 0.06, "detect_bug": 0.06}
#: stage/reason of rejected rows and their shares of the rejected.
REASONS = {"oss_instruct/unparseable": 0.05, "self_instruct_novelty/duplicate": 0.04,
           "evol_instruct/filtered": 0.04, "solve/unparseable": 0.03,
           "execute/exec_failed": 0.16, "execute/exec_timeout": 0.03,
           "execute/syntax_error": 0.02, "case2code_check/exec_failed": 0.02,
           "decontam/contaminated": 0.01, "dedup_exact/duplicate": 0.04,
           "dedup/duplicate": 0.05, "dedup_minhash/duplicate": 0.03,
           "variant_gate/behaviour_changed": 0.03, "score/unscorable": 0.01,
           "select/not_selected": 0.44}
STAGE_ORDER = ["oss_instruct", "self_instruct", "self_instruct_novelty", "evol_instruct",
               "case2code_cases", "decontam_instruction", "solve", "execute", "pass_counts",
               "case2code_infer", "case2code_check", "decontam", "dedup_exact", "dedup",
               "dedup_minhash", "transform", "variant_gate", "score", "select"]
BATCH = 100_000
CODE = '''def {name}(items, key=None):
    """Return the items of `items` grouped by `key` ({i})."""
    out = {{}}
    for item in items:
        k = key(item) if key else item
        out.setdefault(k, []).append(item)
    return out
'''


def _texts(start: int, n: int, rng: np.random.Generator) -> dict[str, list[str]]:
    idx = range(start, start + n)
    code = [CODE.format(name=f"group_{i % 997}", i=i) for i in idx]
    long = rng.random(n) < 0.003  # a few very long samples: the report must cut them
    for j in np.flatnonzero(long):
        code[j] = code[j] * 60
    instr = [f"Write a function `group_{i % 997}(items, key=None)` that groups the items by "
             f"key and returns a dict of lists, keeping their order (task {i})." for i in idx]
    tests = [f"assert group_{i % 997}([1, 2, 1]) == {{1: [1, 1], 2: [2]}}\n"
             f"assert group_{i % 997}([]) == {{}}\n" for i in idx]
    resp = [f"```python\n{c}```" for c in code]
    return {"code": code, "instruction": instr, "tests": tests, "response": resp}


def _ids(start: int, n: int) -> list[str]:
    return [f"{(i * 2654435761) % (1 << 64):016x}" for i in range(start, start + n)]


def _execution(n: int, rng: np.random.Generator, status: np.ndarray) -> pa.Array:
    total = rng.integers(1, 12, n)
    passed = np.where(status == "passed", total, rng.integers(0, 1, n))
    return pa.StructArray.from_arrays(
        [pa.array(status), pa.array(np.round(rng.lognormal(-2.5, 0.9, n), 4)),
         pa.array(passed), pa.array(total)], ["status", "duration_s", "tests_passed",
                                              "tests_total"])


def _scores(loss: np.ndarray, ifd: np.ndarray, tokens: np.ndarray) -> list:
    return [None if not np.isfinite(lo) else
            [{"name": "ifd", "value": float(f)}, {"name": "loss", "value": float(lo)},
             {"name": "loss_alone", "value": float(lo / f)},
             {"name": "response_tokens", "value": float(t)}]
            for lo, f, t in zip(loss, ifd, tokens, strict=True)]


def _kept_batch(start: int, n: int, rng: np.random.Generator, schema: pa.Schema) -> pa.Table:
    strat = rng.choice(list(STRATEGIES), n, p=list(STRATEGIES.values()))
    t = _texts(start, n, rng)
    loss = rng.lognormal(0.0, 0.45, n)
    ifd = rng.beta(5, 3, n)
    tokens = rng.integers(20, 900, n)
    kind = np.where(np.isin(strat, ["fix_bug", "detect_bug"]), "bug",
                    rng.choice(["", "", "", "refactor", "augment"], n))
    ids = _ids(start, n)
    # a variant's parent is an earlier row: the lineage links into the output
    parent = [ids[j - 1] if k and j else f"seed{i % 400_000:07d}"
              for j, (i, k) in enumerate(zip(range(start, start + n), kind, strict=True))]
    status = np.where(kind == "bug", "failed", "passed")
    return pa.table({
        "id": ids, "messages": [[{"role": "user", "content": a},
                                 {"role": "assistant", "content": b}]
                                for a, b in zip(t["instruction"], t["response"], strict=True)],
        "instruction": t["instruction"], "response": t["response"], "code": t["code"],
        "tests": t["tests"], "language": ["python"] * n, "strategy": strat,
        "parent_id": parent, "seed_ref": [f"repo/file_{i % 5000}.py:1-40" for i in
                                          range(start, start + n)],
        "round": (kind != "").astype(np.int64), "kind": [k or None for k in kind],
        "op": [{"refactor": "rename_function", "augment": "random_deletion",
                "bug": "missing_return"}.get(k) for k in kind],
        "execution": _execution(n, rng, status), "scores": _scores(loss, ifd, tokens),
        "loss": loss, "loss_alone": loss / ifd, "ifd": ifd, "response_tokens": tokens,
        "model": ["qwen2.5-coder-7b"] * n}, schema=schema)


def _rejected_batch(start: int, n: int, rng: np.random.Generator,
                    schema: pa.Schema) -> pa.Table:
    strat = rng.choice(list(STRATEGIES), n, p=list(STRATEGIES.values()))
    which = rng.choice(list(REASONS), n, p=list(REASONS.values()))
    stage = [w.split("/")[0] for w in which]
    reason = [w.split("/")[1] for w in which]
    t = _texts(start, n, rng)
    scored = (which == "select/not_selected")
    loss = np.where(scored, rng.lognormal(-0.4, 0.45, n), np.nan)
    ifd = rng.beta(3, 4, n)
    executed = ~np.isin(which, ["oss_instruct/unparseable", "self_instruct_novelty/duplicate",
                                "evol_instruct/filtered", "solve/unparseable"])
    status = np.where(np.char.startswith(which.astype(str), "execute/exec_failed"), "failed",
                      np.where(which == "execute/exec_timeout", "timeout", "passed"))
    ex = _execution(n, rng, status)
    ex = pa.array([e if x else None for e, x in zip(ex.to_pylist(), executed, strict=True)],
                  ex.type)
    detail = [f"AssertionError: group_{i % 997}([1, 2, 1]) returned None\n" * (1 + i % 5)
              if r.startswith("exec") else f"{r} ({s})"
              for i, r, s in zip(range(start, start + n), reason, stage, strict=True)]
    return pa.table({
        "id": _ids(start, n), "stage": stage, "reason": reason, "detail": detail,
        "strategy": strat, "parent_id": [f"seed{i % 400_000:07d}" for i in
                                         range(start, start + n)],
        "seed_ref": [f"repo/file_{i % 5000}.py:1-40" for i in range(start, start + n)],
        "instruction": t["instruction"], "response": t["response"], "code": t["code"],
        "tests": t["tests"], "execution": ex,
        "scores": _scores(loss, ifd, rng.integers(20, 900, n)),
        "contamination": [{"benchmark": "humaneval", "match": "HumanEval/12",
                           "method": "ngram", "score": 0.9} if r == "contaminated" else None
                          for r in reason],
        "model": ["qwen2.5-coder-7b"] * n}, schema=schema)


def _write(path: Path, n: int, first: int, make, schema: pa.Schema, seed: int) -> pa.Table:
    """Batches of `make` into one Parquet file; returns (strategy, tag) of every row."""
    rng = np.random.default_rng(seed)
    tags = []
    with pq.ParquetWriter(path, schema) as w:
        for start in range(first, first + n, BATCH):
            t = make(start, min(BATCH, first + n - start), rng, schema)
            w.write_table(t)
            tags.append(t.select([c for c in ("strategy", "stage", "reason", "kind", "loss")
                                  if c in t.column_names]))
    return pa.concat_tables(tags)


def build(out: Path, rows: int, seed: int) -> None:
    """The synthetic run output (module docstring) under `out`."""
    import datasets

    from pipeline.config import OutputConfig
    from pipeline.output import DATASET_FEATURES, REJECTED_FEATURES
    from pipeline.output_build import save, split_keys, unique_sorted

    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "state" / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    n_kept = rows // 2
    kept = _write(tmp / "kept.parquet", n_kept, 0, _kept_batch,
                  DATASET_FEATURES.arrow_schema, seed)
    rej = _write(tmp / "rejected.parquet", rows - n_kept, n_kept, _rejected_batch,
                 REJECTED_FEATURES.arrow_schema, seed + 1)
    cache = str(tmp / "hf")

    def load(name: str, features: datasets.Features) -> datasets.Dataset:
        return datasets.Dataset.from_parquet(str(tmp / f"{name}.parquet"), features=features,
                                             cache_dir=cache)

    def in_id_order(ds: datasets.Dataset) -> pa.Table:
        """The keys `write_outputs` sorts by (id, content hash) and each row's position."""
        ids = ds.data.table.column("id")
        return unique_sorted(pa.table({"id": ids, "h": pa.array([b"\0" * 8] * len(ids),
                                                                 pa.binary(8)),
                                       "i": pa.array(np.arange(len(ids)))}))

    ds = load("kept", DATASET_FEATURES)
    splits = split_keys(in_id_order(ds), OutputConfig().validation_share)
    save(datasets.DatasetDict({name: ds.select(keys.column("i").to_numpy())
                               for name, keys in splits.items()}), out / "dataset")
    rej_ds = load("rejected", REJECTED_FEATURES)
    save(rej_ds.select(in_id_order(rej_ds).column("i").to_numpy()), out / "rejected")
    stats = _stats(kept, rej, rows)
    stats["kept_by_split"] = {name: keys.num_rows for name, keys in splits.items()}
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    shutil.rmtree(tmp)


def _counts(col: pa.ChunkedArray) -> dict[str, int]:
    import pyarrow.compute as pc

    return {str(v["values"]): int(v["counts"]) for v in pc.value_counts(col).to_pylist()}


def _stats(kept: pa.Table, rej: pa.Table, rows: int) -> dict:
    """stats.json of the synthetic run: the counters its rows imply."""
    import pyarrow.compute as pc

    by_reason = _counts(pc.binary_join_element_wise(rej["stage"], rej["reason"], "/"))
    kept_by = _counts(kept["strategy"])
    seeds = int(rows * 0.4)
    stages: dict[str, dict] = {}
    alive = rows
    for i, name in enumerate(STAGE_ORDER):
        drops = {k.split("/")[1]: v for k, v in by_reason.items() if k.split("/")[0] == name}
        n_in = alive
        c = {"received": n_in, "consumed": 0, "created": 0, "in": n_in,
             **{f"dropped_{r}": v for r, v in drops.items()},
             "out": n_in - sum(drops.values()), "seconds": round(30.0 + 97.0 * i, 3)}
        if name in ("oss_instruct", "self_instruct", "evol_instruct", "solve"):
            c.update(requests=n_in, prompt_tokens=n_in * 410, completion_tokens=n_in * 260)
        if name == "execute":
            c.update(exec_passed=c["out"], exec_failed=drops.get("exec_failed", 0),
                     exec_timeout=drops.get("exec_timeout", 0))
        if name == "transform":
            c.update(created=int(rows * 0.1), variants_refactor=int(rows * 0.05),
                     variants_augment=int(rows * 0.03), variants_bug=int(rows * 0.02))
        if name == "score":
            c.update(scored=n_in, scored_tokens=n_in * 350)
        stages[name] = c
        alive = c["out"]
    stages["select"].update(policy="ifd", group_by="strategy", by_strategy={
        s: {"scored": int(n * 1.8), "ifd_ge_1_share": 0.02} for s, n in kept_by.items()})
    return {
        "seeds": seeds, "seed_snippets": {"candidates": seeds, "kept": seeds},
        "model": "qwen2.5-coder-7b", "backend": "vllm", "executor": "ray",
        "stage_order": STAGE_ORDER, "stages": stages,
        "sources": {s: int(seeds * p) for s, p in STRATEGIES.items()
                    if s not in ("fix_bug", "detect_bug")},
        "scorer": "vllm:qwen2.5-coder-0.5b", "candidates": rows // 2,
        "kept": kept.num_rows, "rejected": rej.num_rows,
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "tokens": {f"{s}_prompt": rows * 300 for s in ("oss_instruct", "solve")},
        "kept_by_strategy": dict(sorted(kept_by.items())),
        "yield": round(kept.num_rows / seeds, 3),
        "by_strategy": {s: {"generated": int(seeds * p * 1.1), "parsed": int(seeds * p),
                            "novel": int(seeds * p * 0.95), "verified": kept_by.get(s, 0)}
                        for s, p in STRATEGIES.items() if s not in ("fix_bug", "detect_bug")},
        "wall_time_s": 5400.0,
    }


def measure(out: Path) -> dict:
    """Time write_report on `out` in this (fresh) process."""
    t0 = time.perf_counter()
    from pipeline.report import write_report

    t_import = time.perf_counter() - t0
    path = write_report(out)
    seconds = time.perf_counter() - t0
    use = resource.getrusage(resource.RUSAGE_SELF)
    return {"build_s": round(seconds, 2), "import_s": round(t_import, 2),
            # CPU seconds: wall time on a machine that other work shares is not the figure
            "cpu_s": round(use.ru_utime + use.ru_stime, 2),
            "html_bytes": path.stat().st_size,
            **_rss_parts()}


def _rss_parts() -> dict[str, float]:
    """Peak RSS, and the resident memory now, anonymous vs file-backed (the memory-mapped
    Arrow). Linux's ru_maxrss keeps the parent's peak across fork and exec, so the peak is
    VmHWM from /proc where there is one."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                     / 1024, 1)}
    parts = {k.strip(): int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in lines)
             if k in ("VmHWM", "RssAnon", "RssFile")}
    return {"peak_rss_mb": round(parts.get("VmHWM", 0) / 1024, 1),
            "rss_anon_mb": round(parts.get("RssAnon", 0) / 1024, 1),
            "rss_file_mb": round(parts.get("RssFile", 0) / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="build (or reuse) the run output here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary output")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="report-bench-")) / "out"
    t0 = time.perf_counter()
    if not (out / "stats.json").is_file():
        build(out, args.rows, args.seed)
    built = time.perf_counter() - t0
    r = subprocess.run([sys.executable, __file__, "--measure", str(out)], check=True,
                       capture_output=True, text=True)
    result = {"rows": args.rows, "output_built_s": round(built, 1),
              **json.loads(r.stdout.strip().splitlines()[-1]), "report": str(out /
                                                                            "report.html")}
    print(json.dumps(result))
    if not args.keep and args.out is None:
        shutil.rmtree(out.parent)


if __name__ == "__main__":
    main()
