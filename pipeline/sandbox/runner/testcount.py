"""What counts as a test: one definition for the host's reply checks and the runner.

The runner counts tests with it inside the sandbox; the host imports it
(`pipeline.sandbox.runner.testcount`) so that the reply checks reject as `no_tests`
exactly the tests in which the runner would find nothing to count
(pipeline/codecheck.py, pipeline/languages/javascript.py). Standard library only.

**The rule** (`counted`), for the top-level statements of assert-style tests in any
language: a statement is one test when running it checks something. It contains a check
(an `assert`, an assert call such as `assert.strictEqual(...)` or
`np.testing.assert_equal(...)`, or `pytest.raises`), or it calls a function that the tests
define and that checks (HumanEval's `check(candidate)`, transitively); a loop over cases is
one test. Definitions are never tests themselves, and neither is a `try` that catches
assertion failures, since a failing check inside it passes. Other statements (imports,
setup, `print(...)`) run but do not count, so tests without a check count nothing.

**Python** tests are run in one of two styles (`detect_style`). *pytest*: the tests
define test functions or test classes that pytest collects (`pytest_tests`: a top-level
`test*` function, unless the tests call it with arguments, which makes it a helper like
`check(candidate)`; a `Test*` or `unittest.TestCase` class); the count is theirs, and the
lines that only start them when the tests run as a script (`unittest.main()`, `test_x()`,
which the reply checks add) are left out under pytest (`pytest_source`). *asserts*: all
other tests; each top-level statement runs in the solution's namespace (the body of an
`if __name__ == "__main__":` block flattened into the top level) and counts by the rule.

**JavaScript** tests are split on the host, which has the tree-sitter grammar: it
describes each top-level statement as a `Statement` and sends the rule's verdicts with
them; the runner counts those (`count_js_tests`).
"""

from __future__ import annotations

import ast
import io
from collections.abc import Sequence
from dataclasses import dataclass

PYTEST, ASSERTS = "pytest", "asserts"
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_TRY = (ast.Try, getattr(ast, "TryStar", ast.Try))  # TryStar: Python 3.11+
#: Exception types whose handler also catches a failed assert.
_CATCH_ALL = frozenset({"AssertionError", "Exception", "BaseException"})


@dataclass(frozen=True)
class Statement:
    """What the rule needs to know of one top-level statement, in any language."""

    #: Names of the functions or classes it defines (a definition is never a test).
    defines: frozenset[str] = frozenset()
    #: It contains a check (anywhere inside, nested functions included).
    checks: bool = False
    #: Names of the functions it calls.
    calls: frozenset[str] = frozenset()
    #: It is a `try` whose handler catches a failed check.
    swallows: bool = False


def counted(statements: Sequence[Statement]) -> list[bool]:
    """Whether each top-level statement counts as one test (the rule above)."""
    checkers: set[str] = set()
    grew = True
    while grew:  # a helper that calls a checker is a checker
        grew = False
        for s in statements:
            if s.defines and not s.defines <= checkers and (s.checks or s.calls & checkers):
                checkers |= s.defines
                grew = True
    return [not s.defines and not s.swallows and (s.checks or bool(s.calls & checkers))
            for s in statements]


# ---------------------------------------------------------------- Python


def is_check(node: ast.AST) -> bool:
    """An `assert`, or a call of `assert*`, `*.assert*` or `*.raises`."""
    if isinstance(node, ast.Assert):
        return True
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else \
        func.id if isinstance(func, ast.Name) else ""
    return name.startswith(("assert", "raises"))


def is_main_guard(node: ast.stmt) -> bool:
    """`if __name__ == "__main__":` (no else)."""
    if not isinstance(node, ast.If) or node.orelse:
        return False
    t = node.test
    return (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name)
            and t.left.id == "__name__" and len(t.comparators) == 1
            and isinstance(t.comparators[0], ast.Constant)
            and t.comparators[0].value == "__main__")


def is_testcase(node: ast.stmt) -> bool:
    """A class derived from `TestCase` (unittest's, by any import)."""
    return isinstance(node, ast.ClassDef) and any(
        (isinstance(b, ast.Name) and b.id == "TestCase")
        or (isinstance(b, ast.Attribute) and b.attr == "TestCase") for b in node.bases)


def _names(node: ast.expr | None) -> set[str]:
    if isinstance(node, ast.Tuple):
        return set().union(*(_names(e) for e in node.elts))
    if isinstance(node, ast.Attribute):
        return {node.attr}
    return {node.id} if isinstance(node, ast.Name) else set()


def python_statement(node: ast.stmt) -> Statement:
    """The rule's view of one top-level Python statement."""
    inner = list(ast.walk(node))
    defines = frozenset({node.name}) if isinstance(node, (*_FUNCTIONS, ast.ClassDef)) \
        else frozenset()
    swallows = isinstance(node, _TRY) and any(
        h.type is None or _names(h.type) & _CATCH_ALL for h in node.handlers)
    return Statement(defines=defines, checks=any(is_check(n) for n in inner),
                     calls=frozenset(n.func.id for n in inner if isinstance(n, ast.Call)
                                     and isinstance(n.func, ast.Name)),
                     swallows=swallows)


def split_tests(tree: ast.Module) -> list[tuple[ast.stmt, bool]]:
    """The top-level statements of asserts-style tests, each with whether it counts."""
    body: list[ast.stmt] = []
    for node in tree.body:
        body.extend(node.body if is_main_guard(node) else [node])  # type: ignore[attr-defined]
    return list(zip(body, counted([python_statement(n) for n in body]), strict=True))


def _helpers(tree: ast.Module) -> set[str]:
    """Functions the tests call with arguments: helpers, whatever their names."""
    return {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name) and (n.args or n.keywords)}


def pytest_tests(tree: ast.Module) -> list[ast.stmt]:
    """The top-level test functions and test classes that pytest runs."""
    helpers = _helpers(tree)
    return [n for n in tree.body
            if (isinstance(n, _FUNCTIONS) and n.name.startswith("test")
                and n.name not in helpers)
            or (isinstance(n, ast.ClassDef) and (n.name.startswith("Test") or is_testcase(n)))]


def _collected(node: ast.stmt) -> int:
    """Tests pytest collects from one of `pytest_tests` (before parametrization)."""
    if isinstance(node, ast.ClassDef):
        return sum(1 for m in node.body if isinstance(m, _FUNCTIONS) and m.name.startswith("test"))
    return 1


def detect_style(tree: ast.Module) -> str:
    """PYTEST if the tests define tests that pytest runs, else ASSERTS."""
    return PYTEST if pytest_tests(tree) else ASSERTS


def count_tests(tests: str) -> tuple[str, int]:
    """(style, number of tests) of a Python tests source; (ASSERTS, 0) if it does not parse."""
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError):
        return ASSERTS, 0
    found = pytest_tests(tree)
    if found:
        return PYTEST, sum(_collected(n) for n in found)
    return ASSERTS, sum(is_test for _, is_test in split_tests(tree))


def _starts_tests(node: ast.stmt, tests: set[str]) -> bool:
    """`unittest.main(...)`, `pytest.main(...)`, or `test_x()` of a collected test."""
    call = node.value if isinstance(node, ast.Expr) else None
    if not isinstance(call, ast.Call):
        return False
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.attr == "main" and func.value.id in ("unittest", "pytest")
    return isinstance(func, ast.Name) and func.id in tests and not call.args \
        and not call.keywords


def _replace_with_pass(lines: list[str], node: ast.stmt) -> None:
    """Replace a statement's text by `pass`, keeping the lines and what shares them."""
    first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
    head = lines[first].encode()[:node.col_offset].decode(errors="replace")
    tail = lines[last].encode()[node.end_col_offset or 0:].decode(errors="replace")
    lines[first:last + 1] = [head + "pass" + tail] + [""] * (last - first)


def pytest_source(tests: str) -> str:
    """The tests as pytest gets them: the lines that start the tests as a script blanked
    (pytest runs them itself; `unittest.main()` would exit), `test*` helpers hidden from
    collection. Line numbers stay as they were."""
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError):
        return tests  # pytest reports the error
    names = {n.name for n in pytest_tests(tree) if isinstance(n, _FUNCTIONS)}
    lines = io.StringIO(tests, newline=None).read().split("\n")  # as the parser counts
    for node in reversed(tree.body):
        if _starts_tests(node, names):
            _replace_with_pass(lines, node)
    hidden = sorted(n.name for n in tree.body if isinstance(n, _FUNCTIONS)
                    and n.name.startswith("test") and n.name not in names)
    return "\n".join([*lines, *(f"{name}.__test__ = False" for name in hidden)]) + "\n"


# ---------------------------------------------------------------- JavaScript


def count_js_tests(units: object) -> int:
    """Counted tests of a JavaScript request's "tests"; ValueError if malformed."""
    if not isinstance(units, list) or not all(
            isinstance(u, list) and len(u) == 3 and isinstance(u[0], str) for u in units):
        raise ValueError("javascript tests must be a list of [statement, counted, line]")
    return sum(1 for u in units if u[1])
