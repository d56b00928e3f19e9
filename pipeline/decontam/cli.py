"""`python -m pipeline decontaminate`: check user records against benchmarks.

    python -m pipeline decontaminate --input IN.jsonl --output OUT.jsonl
        [--benchmark NAME_OR_PATH ...] [--config C.yaml]

Input records `{"id", "instruction", "code"?, "tests"?}`; output one record per input,
in order: `id`, `contaminated`, `benchmark` ("humaneval", "mbpp", or the name given; null
when clean), `match` (the benchmark's own task id), `method`, `score`, and `evidence`
(each method's nearest item and score, fired or not). Methods and thresholds are the
config's `decontam` section; `--benchmark` replaces its benchmark list. The execution
method runs the sandbox of the config's `sandbox` section.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, load_config
from pipeline.jsonl import read_file


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        rows = read_file(str(path))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for n, row in enumerate(rows, 1):
        if not isinstance(row.get("instruction", ""), str) \
                or not isinstance(row.get("code") or "", str) \
                or not (row.get("instruction") or row.get("code")):
            raise ConfigError(f"{path} record {n}: a record needs a string 'instruction' "
                              "(and optional string 'code'), e.g. {\"id\": \"a\", "
                              "\"instruction\": \"Write a function ...\"}")
    return rows


def cmd_decontaminate(args: argparse.Namespace) -> int:
    from pipeline.decontam.detector import Decontaminator, DecontamRecord
    from pipeline.llm.models import ModelError

    cfg = load_config(args.config)
    dc = cfg.decontam
    if args.benchmark:
        dc = dc.model_copy(update={"benchmarks": list(args.benchmark)})
    rows = _read(Path(args.input))
    records = [DecontamRecord(str(r.get("id", n)), r.get("instruction") or "",
                              r.get("code") or "") for n, r in enumerate(rows)]
    pool = None
    t0 = time.perf_counter()
    try:
        checker = None
        if "execution" in dc.methods and any(r.code for r in records):
            from pipeline.decontam.execution import ExecutionChecker, probe_sandbox
            from pipeline.sandbox.pool import SandboxPool

            pool = SandboxPool(probe_sandbox(cfg.sandbox))
            pool.start()
            checker = ExecutionChecker(pool)
        detector = Decontaminator(dc, sandbox=checker)
        verdicts = []
        for start in range(0, len(records), dc.batch_size):
            verdicts += detector.check(records[start:start + dc.batch_size])
    except (ValueError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if pool is not None:
            pool.close()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec, v in zip(records, verdicts, strict=True):
            f.write(json.dumps({"id": rec.id, **v.to_dict()}, ensure_ascii=False) + "\n")
    tmp.replace(out)
    hits = sum(v.contaminated for v in verdicts)
    print(f"{hits} of {len(records)} records contaminated "
          f"({time.perf_counter() - t0:.1f} s) -> {out}")
    return 0


def add_parser(sub: Any) -> None:
    d = sub.add_parser("decontaminate", help="check records against HumanEval, MBPP and "
                       "other benchmarks")
    d.add_argument("--input", required=True, help="JSONL: {id, instruction, code?, tests?}")
    d.add_argument("--output", required=True, help="JSONL: one verdict per input record")
    d.add_argument("--benchmark", action="append", help="humaneval, mbpp, a JSONL path or "
                   "a dataset name (repeatable; default: the config's decontam.benchmarks)")
    d.add_argument("--config", help="YAML config (decontam and sandbox sections)")
    d.set_defaults(func=cmd_decontaminate)
