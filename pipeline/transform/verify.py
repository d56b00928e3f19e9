"""Checks on variants: re-parse (tree-sitter, then `compile` for what a parser accepts but
Python rejects), a compact record of the changed lines, and the sandbox verdict rule.

Verdict rule: a refactor is kept only if its tests still pass; a bug only if at least one
test now fails (failed, timeout or memory_exceeded; SWE-smith's rule). A sandbox error
says nothing about the code, so it is never read as pass or fail.
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any

import tree_sitter_python
from tree_sitter import Language, Parser, Tree

from pipeline.record import ExecStatus, RejectReason

_PARSER = Parser(Language(tree_sitter_python.language()))

#: Why a variant is dropped (string form, as written in the CLI output and reject_detail).
BEHAVIOUR_CHANGED = "behaviour_changed"
BUG_NOT_CAUGHT = "bug_not_caught"
SANDBOX_ERROR = "sandbox_error"
INVALID = "invalid"


def ts_parse(code: str) -> Tree:
    """tree-sitter parse of Python source."""
    return _PARSER.parse(code.encode("utf-8"))


def parses(code: str) -> bool:
    """Whether `code` is valid Python: no tree-sitter error node and `compile` accepts it
    (which also catches scope errors such as `nonlocal` of an unknown name)."""
    if ts_parse(code).root_node.has_error:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(code, "<variant>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def changed_lines(before: str, after: str) -> dict[str, Any]:
    """The changed line ranges (1-based, inclusive) on both sides, and the lines."""
    a, b = before.splitlines(), after.splitlines()
    ops = [op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
           if op[0] != "equal"]
    if not ops:
        return {}
    i1, j1 = ops[0][1], ops[0][3]
    i2, j2 = ops[-1][2], ops[-1][4]
    return {"old_lines": [i1 + 1, i2], "new_lines": [j1 + 1, j2],
            "old_text": "\n".join(a[i1:i2]), "new_text": "\n".join(b[j1:j2])}


def verdict(kind: str, status: ExecStatus) -> str | None:
    """None if a variant of `kind` with this execution status is kept, else the reason."""
    if status is ExecStatus.SANDBOX_ERROR:
        return SANDBOX_ERROR
    if kind == "refactor":
        return None if status is ExecStatus.PASSED else BEHAVIOUR_CHANGED
    if kind == "bug":
        return BUG_NOT_CAUGHT if status is ExecStatus.PASSED else None
    return None


def reject_reason(reason: str) -> RejectReason:
    """The RejectReason of a `verdict` reason: each has its own member in record.py."""
    return RejectReason(reason)
