"""The reply checks and the sandbox runner agree on what counts as a test.

Tests that the checks accept must hold tests the runner counts, and tests in which the
runner would find nothing to count are rejected as `no_tests` before they reach it. Each
case is a shape of tests that models write, with a correct solution: it goes through the
same checks as a generated reply (`LanguageSpec.check`), then through the real sandbox on
both backends. Before the two shared one definition
(pipeline/sandbox/runner/testcount.py) every one of these was `failed` with the right
solution: "no tests found", or unittest.main() exiting under pytest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.config import SandboxConfig
from pipeline.languages import get_language
from pipeline.record import RejectReason
from pipeline.sandbox import SandboxPool
from tests.sandbox_helpers import require_process_backend_with_node

PY = "def add(a, b):\n    return a + b\n"
JS = "function add(a, b) {\n  return a + b;\n}\n"
NO_TESTS = RejectReason.NO_TESTS

#: (id, language, solution, tests, expected): (status, passed, total), or NO_TESTS.
CASES = [
    ("py-loop-over-cases", "python", PY,
     "cases = [(1, 2, 3), (0, 0, 0), (-1, 1, 0)]\nfor a, b, want in cases:\n"
     "    assert add(a, b) == want\n", ("passed", 1, 1)),
    ("py-loop-over-cases-wrong", "python", PY.replace("a + b", "a - b"),
     "for a, b, want in [(1, 2, 3), (0, 0, 0)]:\n    assert add(a, b) == want\n",
     ("failed", 0, 1)),
    ("py-unittest-with-main-guard", "python", PY,
     "import unittest\n\nclass TestAdd(unittest.TestCase):\n    def test_small(self):\n"
     "        self.assertEqual(add(1, 2), 3)\n\n    def test_zero(self):\n"
     "        self.assertEqual(add(0, 0), 0)\n\nif __name__ == '__main__':\n"
     "    unittest.main()\n", ("passed", 2, 2)),
    ("py-unittest-bare", "python", PY,
     "import unittest\n\nclass TestAdd(unittest.TestCase):\n    def test_add(self):\n"
     "        self.assertEqual(add(1, 2), 3)\n", ("passed", 1, 1)),
    ("py-unittest-wrong", "python", PY.replace("a + b", "a - b"),
     "import unittest\n\nclass TestAdd(unittest.TestCase):\n    def test_add(self):\n"
     "        self.assertEqual(add(1, 2), 3)\n", ("failed", 0, 1)),
    ("py-test-function-takes-the-solution", "python", PY,
     "def test_add(func):\n    assert func(1, 2) == 3\n    assert func(0, 0) == 0\n\n"
     "test_add(add)\n", ("passed", 1, 1)),
    ("py-pytest-with-test-named-helper", "python", PY,
     "def test_case(a, b, want):\n    assert add(a, b) == want\n\ndef test_all():\n"
     "    test_case(1, 2, 3)\n    test_case(0, 0, 0)\n", ("passed", 1, 1)),
    ("py-with-raises", "python", PY,
     "import pytest\n\nassert add(1, 2) == 3\nwith pytest.raises(TypeError):\n    add(1)\n",
     ("passed", 2, 2)),
    ("py-assert-method-calls", "python", PY,
     "from unittest import TestCase\n\ncheck = TestCase()\ncheck.assertEqual(add(1, 2), 3)\n"
     "check.assertEqual(add(2, 2), 4)\n", ("passed", 2, 2)),
    ("py-checker-never-called", "python", PY,
     "def check():\n    assert add(1, 2) == 3\n", NO_TESTS),
    ("py-try-swallows-the-failure", "python", PY,
     "try:\n    assert add(1, 2) == 3\n    print('ok')\nexcept AssertionError:\n"
     "    print('Test failed')\n", NO_TESTS),
    ("js-for-of-loop", "javascript", JS,
     "const cases = [[1, 2, 3], [0, 0, 0]];\nfor (const [a, b, want] of cases) {\n"
     "  assert.strictEqual(add(a, b), want);\n}\n", ("passed", 1, 1)),
    ("js-for-each", "javascript", JS,
     "[[1, 2, 3], [0, 0, 0]].forEach(([a, b, want]) => assert.strictEqual(add(a, b), want));\n",
     ("passed", 1, 1)),
    ("js-for-each-wrong", "javascript", JS.replace("a + b", "a - b"),
     "[[1, 2, 3], [0, 0, 0]].forEach(([a, b, want]) => assert.strictEqual(add(a, b), want));\n",
     ("failed", 0, 1)),
    ("js-arrow-checker", "javascript", JS,
     "const check = (f) => {\n  assert.strictEqual(f(1, 2), 3);\n};\ncheck(add);\n",
     ("passed", 1, 1)),
    ("js-checker-never-called", "javascript", JS,
     "function check() {\n  assert.strictEqual(add(1, 2), 3);\n}\n", NO_TESTS),
    ("js-try-swallows-the-failure", "javascript", JS,
     "try {\n  assert.strictEqual(add(1, 2), 3);\n} catch (e) {\n  console.log('failed');\n}\n",
     NO_TESTS),
]


def cfg(backend: str) -> SandboxConfig:
    return SandboxConfig(backend=backend, workers=1, timeout_s=5.0, memory_mb=256)


@pytest.fixture(scope="module", params=[pytest.param("docker", marks=pytest.mark.docker),
                                        "process"])
def pool(request: pytest.FixtureRequest) -> Iterator[SandboxPool]:
    if request.param == "process":
        require_process_backend_with_node()
    with SandboxPool(cfg(request.param)) as p:
        yield p


@pytest.mark.parametrize(("language", "solution", "tests", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_checks_and_runner_agree(pool: SandboxPool, language: str, solution: str,
                                 tests: str, expected: tuple | RejectReason) -> None:
    checked = get_language(language).check(solution, tests)
    if expected is NO_TESTS:
        assert checked[0] is NO_TESTS, checked
        return
    code, tidied = checked
    assert not isinstance(code, RejectReason), checked
    res = pool.request("agree", code, tidied, language)
    got = (res["status"], res["tests_passed"], res["tests_total"])
    assert got == expected, f"{tidied}\n---\n{res['stderr'][-1500:]}"
