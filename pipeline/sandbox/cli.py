"""`python -m pipeline sandbox`: run JSONL records {"id", "code", "tests"} in the sandbox.

Writes one JSON line per input record, in input order: {"id", "status", "duration_s",
"tests_passed", "tests_total", "stdout", "stderr"}. `-` means stdin / stdout.
Exit codes: 0 done, 1 sandbox unavailable (the message says how to fix it), 2 bad
input or config.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from pipeline.config import ConfigError, SandboxConfig, load_config
from pipeline.jsonl import run_jsonl
from pipeline.sandbox.pool import run_records


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `sandbox` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "sandbox", help="run {id, code, tests} JSONL records in the sandbox",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="JSONL input file, or - for stdin")
    p.add_argument("--output", required=True, help="JSONL output file, or - for stdout")
    p.add_argument("--config", default=None, help="run config YAML; its `sandbox` section "
                   "is used (default: built-in defaults)")
    p.add_argument("--backend", choices=["docker", "process"], default=None,
                   help="override sandbox.backend")
    p.add_argument("--timeout-s", type=float, default=None, help="override sandbox.timeout_s")
    p.add_argument("--workers", type=int, default=None, help="override sandbox.workers")
    p.set_defaults(func=main)
    return p


def _sandbox_config(args: argparse.Namespace) -> SandboxConfig:
    cfg = load_config(args.config).sandbox
    overrides = {k: v for k, v in (("backend", args.backend), ("timeout_s", args.timeout_s),
                                   ("workers", args.workers)) if v is not None}
    if overrides:
        try:
            cfg = SandboxConfig.model_validate({**cfg.model_dump(), **overrides})
        except ValueError as exc:
            raise ConfigError(f"invalid command-line override: {exc}") from None
    return cfg


def main(args: argparse.Namespace) -> int:
    """Run the subcommand; returns the exit code."""
    try:
        cfg = _sandbox_config(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts: Counter[str] = Counter()

    def count(res: dict[str, Any]) -> None:
        counts[res["status"]] += 1

    rc = run_jsonl(args.input, args.output, lambda recs: run_records(cfg, recs), count)
    if rc:
        return rc
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no records"
    print(f"sandbox: {summary}", file=sys.stderr)
    return 0
