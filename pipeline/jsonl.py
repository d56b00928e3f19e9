"""JSON-lines plumbing shared by the record-in, record-out subcommands (sandbox, transform)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from pipeline.sandbox.channel import SandboxUnavailable

Record = dict[str, Any]


def read_records(stream: IO[str], name: str) -> Iterator[Record]:
    """Yield one JSON object per non-blank line; a bad line is a ValueError naming it."""
    for n, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{name} line {n}: not JSON ({exc})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{name} line {n}: expected a JSON object")
        yield rec


def read_file(path: str) -> list[Record]:
    """Every record of a JSONL file; ValueError (naming the file, and the line when a
    record is bad) for a file that cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as f:
            return list(read_records(f, path))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None


def run_jsonl(src: str, dst: str, produce: Callable[[Iterator[Record]], Iterable[Record]],
              on_record: Callable[[Record], None]) -> int:
    """Stream records from `src` through `produce` into `dst` ('-': stdin/stdout).

    Returns the exit code: 0, 1 when the sandbox is unavailable, 2 for bad input or files.
    Each output record is flushed as written, so a killed run keeps what it finished.
    """
    with contextlib.ExitStack() as stack:
        try:
            fin = sys.stdin if src == "-" else stack.enter_context(open(src, encoding="utf-8"))
            fout = sys.stdout if dst == "-" else stack.enter_context(
                open(dst, "w", encoding="utf-8"))
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            for rec in produce(read_records(fin, src)):
                fout.write(json.dumps(rec, ensure_ascii=False) + "\n")
                fout.flush()
                on_record(rec)
        except SandboxUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0
