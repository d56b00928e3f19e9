"""`python -m pipeline transform`: variants of JSONL records {"id", "code", "tests"}.

Writes one JSON line per variant: {"id", "parent_id", "kind" (refactor, augment or bug),
"op", "code", "tests", "edit", "parses", "status", "tests_passed", "tests_total",
"stderr", "verdict" (kept or rejected), "reason"}. Refactors that changed behaviour
(`behaviour_changed`) and bugs no test catches (`bug_not_caught`) are written as rejected.
Augment variants are not run (status `not_run`). Variants are made and judged by the
run's own transform and variant-gate stages, with the config's `seed`. `-` means stdin /
stdout.
Exit codes: 0 done, 1 sandbox unavailable (the message says how to fix it), 2 bad
input or config.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from pipeline.config import ConfigError, PipelineConfig, TransformConfig, load_config
from pipeline.jsonl import run_jsonl
from pipeline.sandbox.cli import _sandbox_config
from pipeline.transform.generate import selected_operators
from pipeline.transform.run import transform_records


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `transform` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "transform", help="make refactor, augment and bug variants of {id, code, tests} "
        "JSONL records and verify them in the sandbox",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", help="JSONL input file, or - for stdin")
    p.add_argument("--output", help="JSONL output file, or - for stdout")
    p.add_argument("--config", default=None, help="run config YAML; its `transform` and "
                   "`sandbox` sections are used (default: built-in defaults)")
    p.add_argument("--ops", default=None, help="comma-separated operators (override "
                   "transform.operators)")
    p.add_argument("--variants", type=int, default=None,
                   help="override transform.variants_per_sample")
    p.add_argument("--all-ops", action="store_true", help="apply every selected operator "
                   "once per record (ignores variants_per_sample and mix)")
    p.add_argument("--no-sandbox", action="store_true", help="generate only; no verdicts")
    p.add_argument("--backend", choices=["docker", "process"], default=None,
                   help="override sandbox.backend")
    p.add_argument("--timeout-s", type=float, default=None, help="override sandbox.timeout_s")
    p.add_argument("--workers", type=int, default=None, help="override sandbox.workers")
    p.add_argument("--list", action="store_true", help="list the operators and exit")
    p.set_defaults(func=main)
    return p


def _config(args: argparse.Namespace) -> PipelineConfig:
    """The run config with the command line's transform and sandbox overrides."""
    cfg = load_config(args.config)
    update: dict[str, Any] = {"transform": _transform_config(cfg.transform, args)}
    if not args.no_sandbox:
        update["sandbox"] = _sandbox_config(args)
    return cfg.model_copy(update=update)


def _transform_config(cfg: TransformConfig, args: argparse.Namespace) -> TransformConfig:
    overrides: dict[str, Any] = {}
    if args.ops:
        overrides["operators"] = [o.strip() for o in args.ops.split(",") if o.strip()]
    if args.variants is not None:
        overrides["variants_per_sample"] = args.variants
    try:
        cfg = TransformConfig.model_validate({**cfg.model_dump(), **overrides})
        selected_operators(cfg.operators)
    except ValueError as exc:
        raise ConfigError(f"invalid transform settings: {exc}") from None
    return cfg


def main(args: argparse.Namespace) -> int:
    """Run the subcommand; returns the exit code."""
    if args.list:
        for op in selected_operators():
            print(f"{op.kind:9s} {op.name:22s} {op.description}")
        return 0
    if not args.input or not args.output:
        print("error: --input and --output are required", file=sys.stderr)
        return 2
    try:
        cfg = _config(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts: Counter[str] = Counter()
    verdicts: Counter[str] = Counter()
    def tally(rec: dict[str, Any]) -> None:
        reason = f" ({rec['reason']})" if rec["reason"] else ""
        verdicts[f"{rec['kind']} {rec['verdict']}{reason}"] += 1

    rc = run_jsonl(args.input, args.output,
                   lambda recs: transform_records(cfg, recs, sandbox=not args.no_sandbox,
                                                  all_ops=args.all_ops, counts=counts), tally)
    if rc:
        return rc
    summary = ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())) or "no variants"
    na = sum(v for k, v in counts.items() if k.endswith(":not_applicable"))
    print(f"transform: {summary}; {na} operator application(s) not applicable",
          file=sys.stderr)
    return 0
