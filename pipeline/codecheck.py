"""Separate a generated solution from its tests and check both, with `ast`.

Model output mixes the two: asserts after the function, an `if __name__ == "__main__":`
block, `print(f(3))` usage lines, a copy of the solution at the top of the tests, or
pytest-style `def test_...` functions that nothing calls. These helpers edit the code by
line ranges (comments and layout survive) so that the solution is importable definitions
only and the tests run as a plain script after it. What counts as a test, and so when
tests are `no_tests`, is the sandbox runner's definition
(`pipeline.sandbox.runner.testcount`), so the checks never pass on tests in which the
runner would find nothing to count.
"""

from __future__ import annotations

import ast
import builtins
import re
import textwrap
import typing
from collections.abc import Callable, Mapping

from pipeline.record import RejectReason
from pipeline.sandbox.runner.testcount import (
    count_tests,
    is_check,
    is_main_guard,
    is_testcase,
    pytest_tests,
)

#: Modules that a test imports the solution from; the sandbox concatenates instead.
_SOLUTION_MODULES = {"solution", "main", "__main__", "code", "module", "your_module"}
#: Stdlib modules imported for code that uses them without an import.
_AUTO_IMPORT_MODULES = frozenset({
    "bisect", "collections", "datetime", "functools", "heapq", "itertools", "json", "math",
    "operator", "re", "statistics", "string",
})


def _span(node: ast.stmt) -> tuple[int, int]:
    """0-based inclusive line range of a statement, decorators included."""
    decorators = getattr(node, "decorator_list", [])
    start = min([node.lineno] + [d.lineno for d in decorators])
    return start - 1, (node.end_lineno or node.lineno) - 1


def _edit(code: str, edits: list[tuple[ast.stmt, list[str]]]) -> str:
    """Replace each statement's lines with the given lines; tidy blank runs."""
    lines = code.splitlines()
    for node, replacement in sorted(edits, key=lambda e: -_span(e[0])[0]):
        start, end = _span(node)
        lines[start:end + 1] = replacement
    return re.sub(r"\n{3,}", "\n\n\n", "\n".join(lines)).strip("\n")


def _body_lines(code: str, node: ast.If) -> list[str]:
    lines = code.splitlines()
    start, end = node.body[0].lineno - 1, (node.body[-1].end_lineno or 0) - 1
    return textwrap.dedent("\n".join(lines[start:end + 1])).splitlines()


def _is_test_def(node: ast.stmt) -> bool:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return node.name.startswith("test")
    return is_testcase(node)


def _call_name(node: ast.AST) -> str:
    """`f` for `f(...)`, `unittest.main` for `unittest.main(...)`, else ''."""
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
        return ""
    func = node.value.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return f"{func.value.id}.{func.attr}"
    return ""


def _has_check(tree: ast.AST) -> bool:
    """A check (an assert, `self.assert...`, `pytest.raises`) or a test function."""
    return any(is_check(node) or (isinstance(node, ast.stmt) and _is_test_def(node))
               for node in ast.walk(tree))


def top_level_names(code: str) -> set[str]:
    """Names of the functions and classes `code` defines at top level."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    return {n.name for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def _unbound_names(tree: ast.AST) -> set[str]:
    """Names read but bound nowhere in `tree` (an over-approximation of scoping)."""
    bound: set[str] = set(dir(builtins))
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return used - bound


def add_missing_imports(code: str) -> str:
    """Prepend imports for typing names (`List`) and common stdlib modules (`re`, `math`)
    that the code uses without importing: the commonest NameError in small-model code."""
    try:
        missing = _unbound_names(ast.parse(code))
    except SyntaxError:
        return code
    typing_names = sorted(missing & set(typing.__all__))
    modules = sorted(missing & _AUTO_IMPORT_MODULES)
    header = [f"import {m}" for m in modules]
    if typing_names:
        header.append(f"from typing import {', '.join(typing_names)}")
    return "\n".join(header) + "\n\n" + code if header else code


def split_solution(code: str) -> tuple[str, str] | str:
    """(definitions, test code found among them), or a syntax error message.

    Moves top-level asserts, test functions and calls to them, and the body of a
    `__main__` guard that checks something, into the tests; drops usage lines
    (`print(...)`, `main()`) and guards that only print.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return f"line {exc.lineno}: {exc.msg}"
    defined = {n.name for n in tree.body
               if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    lines = code.splitlines()
    edits: list[tuple[ast.stmt, list[str]]] = []
    moved: list[str] = []
    for node in tree.body:
        call = _call_name(node)
        if is_main_guard(node):
            if _has_check(node):
                moved.append("\n".join(_body_lines(code, node)))
            edits.append((node, []))
        elif isinstance(node, ast.Assert) or (_is_test_def(node) and _has_check(node)) \
                or call.startswith("test") or call == "unittest.main":
            start, end = _span(node)
            moved.append("\n".join(lines[start:end + 1]))
            edits.append((node, []))
        elif call == "print" or call in defined:
            edits.append((node, []))
    kept = _edit(code, edits).splitlines()
    while kept and (not kept[-1].strip() or kept[-1].lstrip().startswith("#")):
        kept.pop()  # comments that introduced the moved tests or usage lines
    return "\n".join(kept), "\n".join(moved)


def _parse_salvaging_tail(tests: str) -> tuple[str, ast.Module] | None:
    """Parse tests; if they do not parse, drop trailing lines (a reply cut off mid-test)."""
    lines = tests.splitlines()
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        try:
            tree = ast.parse(candidate)
        except SyntaxError:
            continue
        return (candidate, tree) if _has_check(tree) else None
    return None


def tidy_tests(tests: str, solution_names: set[str]) -> str | RejectReason:
    """Tests ready to run after the solution, or why there are none usable.

    Unwraps a `__main__` guard, removes redefinitions and imports of the solution's
    names, calls `test_*` functions and `unittest.main()` that nothing calls (the runner
    leaves those calls to pytest), and requires tests that the runner counts and that
    refer to the solution. Returns NO_TESTS or SYNTAX_ERROR on failure.
    """
    if not tests.strip():
        return RejectReason.NO_TESTS
    salvaged = _parse_salvaging_tail(tests)
    if salvaged is None:
        try:
            ast.parse(tests)
        except SyntaxError:
            return RejectReason.SYNTAX_ERROR
        return RejectReason.NO_TESTS
    tests, tree = salvaged
    edits: list[tuple[ast.stmt, list[str]]] = []
    for node in tree.body:
        if is_main_guard(node):
            edits.append((node, _body_lines(tests, node)))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and node.name in solution_names:
            edits.append((node, []))  # a copy of the solution would shadow the real one
        elif isinstance(node, ast.ImportFrom) and (
                node.module in _SOLUTION_MODULES
                or all(a.name in solution_names for a in node.names)):
            edits.append((node, []))
    tests = _edit(tests, edits)
    try:
        tree = ast.parse(tests)
    except SyntaxError:  # pragma: no cover - removing whole statements keeps it valid
        return RejectReason.SYNTAX_ERROR
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    if not used & solution_names or count_tests(tests)[1] == 0:
        return RejectReason.NO_TESTS
    called = {_call_name(n) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    runners = [f"{n.name}()" for n in pytest_tests(tree)
               if isinstance(n, ast.FunctionDef) and not n.args.args and n.name not in called]
    if any(is_testcase(n) for n in tree.body) and "unittest.main" not in called:
        runners.append("unittest.main()")
    return "\n".join([tests, *runners]) if runners else tests


_TEST_PROBLEMS = {
    RejectReason.NO_TESTS: "no assert or test function that calls the solution",
    RejectReason.SYNTAX_ERROR: "tests do not parse",
}


def check_reply(
    solution: str, tests: str, *,
    split: Callable[[str], tuple[str, str] | str],
    names_of: Callable[[str], set[str]],
    tidy: Callable[[str, set[str]], str | RejectReason],
    problems: Mapping[RejectReason, str],
    prepare: Callable[[str], str] = lambda code: code,
) -> tuple[str, str] | tuple[RejectReason, str]:
    """(code, tests) ready to run, or (reason, detail), with one language's helpers.

    `split` moves test code out of the solution (or says why it does not parse),
    `prepare` fixes the code up (e.g. missing imports), `names_of` must find a definition,
    and `tidy` checks the tests against those names; `problems` words tidy's reasons.
    """
    split_result = split(solution)
    if isinstance(split_result, str):
        return RejectReason.SYNTAX_ERROR, f"solution: {split_result}"
    code, moved_tests = split_result
    code = prepare(code)
    names = names_of(code)
    if not names:
        return RejectReason.UNPARSEABLE, "the solution defines no function"
    tidied = tidy("\n\n".join(t for t in (moved_tests, tests.strip()) if t), names)
    if isinstance(tidied, RejectReason):
        return tidied, problems[tidied]
    return code, tidied


def check_solution(solution: str, tests: str) -> tuple[str, str] | tuple[RejectReason, str]:
    """(code, tests) ready to run, or (reason, detail): the Python checks of a reply.

    Moves test code out of the solution, adds missing imports, requires a function, and
    tidies the tests (`tidy_tests`).
    """
    return check_reply(solution, tests, split=split_solution, names_of=top_level_names,
                       tidy=tidy_tests, problems=_TEST_PROBLEMS, prepare=add_missing_imports)
