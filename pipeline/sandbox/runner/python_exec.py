"""A Python sample's tests, run in the forked child (see `testcount` for the styles).

pytest style: the solution and the tests go into one file (the tests see the solution's
names directly; `import solution` works too) and pytest runs it, its counts taken by a
plugin. asserts style: the solution runs as module `solution`, then each top-level test
statement in its namespace, counting the ones that are tests. Either returns the evidence
without the nonce, which the child adds.
"""

from __future__ import annotations

import ast
import os
import sys
import traceback
import types
from typing import Any

from .protocol import DETAIL_CHARS
from .testcount import pytest_source, split_tests


class _Collector:
    """pytest plugin: counts test outcomes in the child."""

    def __init__(self) -> None:
        self.collected = 0
        self.passed = 0
        self.failed = 0
        self.memory_error = False

    def pytest_collection_finish(self, session: Any) -> None:
        self.collected = len(session.items)

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.failed += 1
            self._look(report)

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" and report.passed:
            self.passed += 1
        elif report.failed:
            self.failed += 1
            self._look(report)

    def _look(self, report: Any) -> None:
        if "MemoryError" in str(report.longrepr):
            self.memory_error = True


def run_pytest(code: str, tests: str, work_dir: str) -> dict:
    """Run pytest-style tests; their evidence."""
    import pytest

    with open(os.path.join(work_dir, "solution.py"), "w") as f:
        f.write(code)
    test_file = os.path.join(work_dir, "test_solution.py")
    with open(test_file, "w") as f:
        f.write(code + "\n\n" + pytest_source(tests))
    col = _Collector()
    args = ["-q", "-s", "-p", "no:cacheprovider", "--rootdir", work_dir, "-o", "addopts=",
            "--tb=short", "-W", "ignore::DeprecationWarning", test_file]
    try:
        pytest.main(args, plugins=[col])
    except MemoryError:
        return {"memory_error": True, "passed": col.passed, "total": col.collected}
    except BaseException as exc:  # SystemExit and friends from the tested code
        return {"error": f"pytest aborted: {exc!r}", "passed": col.passed,
                "total": col.collected}
    ev: dict = {"passed": col.passed, "total": col.collected, "memory_error": col.memory_error}
    if col.failed:
        ev["error"] = f"{col.failed} test(s) or collection failed or errored"
    return ev


def run_asserts(code: str, tests: str, work_dir: str) -> dict:
    """Run the solution, then each top-level test statement; their evidence."""
    mod = types.ModuleType("solution")
    mod.__file__ = os.path.join(work_dir, "solution.py")
    sys.modules["solution"] = mod
    with open(mod.__file__, "w") as f:
        f.write(code)
    test_file = os.path.join(work_dir, "tests.py")
    with open(test_file, "w") as f:
        f.write(tests)
    ev: dict = {"passed": 0, "total": 0}
    errors: list[str] = []

    def note(exc: BaseException, where: str) -> None:
        if isinstance(exc, MemoryError):
            ev["memory_error"] = True
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next  # show the tested code's frames, not the runner's
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        sys.stderr.write(f"[sandbox] {where} raised:\n{text}")
        errors.append(f"{where}: {type(exc).__name__}: {exc}"[:500])

    try:
        exec(compile(code, mod.__file__, "exec"), mod.__dict__)
    except BaseException as exc:
        note(exc, "the code")
        ev["error"] = errors[0]
        return ev
    try:
        units = split_tests(ast.parse(tests, test_file))
    except SyntaxError as exc:
        note(exc, "the tests")
        ev["error"] = errors[0]
        return ev
    for node, is_test in units:
        ev["total"] += is_test
        try:
            exec(compile(ast.Module(body=[node], type_ignores=[]), test_file, "exec"),
                 mod.__dict__)
        except BaseException as exc:
            note(exc, f"tests.py line {node.lineno}")
            continue
        ev["passed"] += is_test
    if errors:
        ev["error"] = "; ".join(errors)[:DETAIL_CHARS]
    return ev
