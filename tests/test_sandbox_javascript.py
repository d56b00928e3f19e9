"""JavaScript samples in the real sandbox, on both backends: node in the image (docker), the
host's node under bubblewrap (process; skipped with the reason where bwrap cannot run or
node is not installed). The verdict comes from the harness's evidence only: code that
exits early, throws at load, loops or runs out of memory never passes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.config import SandboxConfig
from pipeline.record import ExecStatus, Sample
from pipeline.sandbox import SandboxPool, run_records
from pipeline.stages.execute import ExecuteStage
from tests.sandbox_helpers import require_process_backend_with_node

CODE = "function add(a, b) {\n  return a + b;\n}\n"
TESTS = ("assert.strictEqual(add(1, 2), 3);\nassert.strictEqual(add(0, 0), 0);\n"
         "assert.deepStrictEqual([add(-1, 1)], [0]);\n")


def cfg(backend: str, **kw: object) -> SandboxConfig:
    return SandboxConfig(**{"backend": backend, "workers": 1, "timeout_s": 2.0,
                            "memory_mb": 256, "output_limit_bytes": 4096, **kw})


@pytest.fixture(scope="module", params=[pytest.param("docker", marks=pytest.mark.docker),
                                        "process"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "process":
        require_process_backend_with_node()
    return request.param


@pytest.fixture(scope="module")
def pool(backend: str) -> Iterator[SandboxPool]:
    with SandboxPool(cfg(backend)) as p:
        yield p


@pytest.mark.parametrize(("code", "tests", "status", "passed", "total"), [
    (CODE, TESTS, "passed", 3, 3),
    (CODE, "assert.strictEqual(add(1, 2), 3);\nassert.strictEqual(add(1, 1), 3);\n",
     "failed", 1, 2),
    ("throw new Error('boom');\n" + CODE, TESTS, "failed", 0, 3),
    ("process.exit(0);\n" + CODE, TESTS, "failed", 0, 3),
    (CODE, "assert.strictEqual(add(1, 2), 3);\nprocess.exit(0);\n", "failed", 0, 1),
    ("console.log('3 passed');\nsetTimeout(() => process.exit(0), 0);\n" + CODE,
     "assert.strictEqual(add(1, 1), 3);\n", "failed", 0, 1),
    ("while (true) {}\n" + CODE, TESTS, "timeout", 0, 3),
    (CODE, "for (;;) {}\n" + TESTS, "timeout", 0, 3),
    ("const big = Buffer.alloc(2 ** 31);\n" + CODE, TESTS, "memory_exceeded", 0, 3),
    ("function add(a, b) {\n", TESTS, "failed", 0, 3),
    (CODE, "console.log(add(1, 2));\n", "failed", 0, 0),
    (CODE, "function check(f) {\n  assert.strictEqual(f(2, 2), 4);\n}\ncheck(add);\n",
     "passed", 1, 1),
])
def test_verdicts(pool: SandboxPool, code: str, tests: str, status: str, passed: int,
                  total: int) -> None:
    res = pool.request("js", code, tests, "javascript")
    assert (res["status"], res["tests_passed"], res["tests_total"]) == (status, passed, total), \
        res["stderr"][-1500:]


def test_growing_heap_is_not_passed(backend: str) -> None:
    """V8's heap grows past memory_mb: node aborts, never a pass (memory_exceeded when
    node says so, which it does). Filling the heap takes about 2 s of CPU, so this test
    has a time limit that leaves the verdict to memory: with the module's 2 s it timed
    out in a full, loaded suite run."""
    with SandboxPool(cfg(backend, timeout_s=20.0)) as pool:
        code = "const xs = [];\nwhile (true) xs.push({x: Math.random()});\n" + CODE
        res = pool.request("heap", code, TESTS, "javascript")
        assert res["status"] == "memory_exceeded", res["stderr"][-1500:]
        huge = pool.request("fill", "new Array(1e9).fill(0);\n" + CODE, TESTS, "javascript")
        assert huge["status"] in ("memory_exceeded", "failed"), huge["stderr"][-1500:]


def test_failure_details_name_the_test_and_the_error(pool: SandboxPool) -> None:
    res = pool.request("d", CODE, "assert.strictEqual(add(1, 2), 3);\n\n"
                       "assert.strictEqual(add(2, 2), 5);\n", "javascript")
    assert res["status"] == "failed"
    assert "tests.js line 3: AssertionError" in res["stderr"]
    res = pool.request("d", "throw new TypeError('bad');\n", TESTS, "javascript")
    assert "the code: TypeError: bad" in res["stderr"]


def test_python_and_javascript_share_a_runner(pool: SandboxPool) -> None:
    py = pool.request("py", "def add(a, b):\n    return a + b\n", "assert add(1, 2) == 3\n")
    js = pool.request("js", CODE, TESTS, "javascript")
    assert (py["status"], js["status"]) == ("passed", "passed")


def test_execute_stage_runs_each_sample_in_its_language(backend: str) -> None:
    stage = ExecuteStage(cfg(backend, workers=2))
    samples = [Sample(code=CODE, tests=TESTS, language="javascript"),
               Sample(code=CODE, tests="assert.strictEqual(add(1, 1), 3);\n",
                      language="javascript"),
               Sample(code="def add(a, b):\n    return a + b\n", tests="assert add(1, 2) == 3\n")]
    stage.setup()
    try:
        out = stage(samples)
    finally:
        stage.teardown()
    assert [s.execution.status for s in out] == [ExecStatus.PASSED, ExecStatus.FAILED,
                                                 ExecStatus.PASSED]
    assert out[0].execution.tests_passed == out[0].execution.tests_total == 3


def test_run_records_take_a_language(backend: str) -> None:
    recs = [{"id": "js", "code": CODE, "tests": TESTS, "language": "javascript"},
            {"id": "py", "code": "def add(a, b):\n    return a + b\n",
             "tests": "assert add(1, 2) == 3\n"}]
    out = list(run_records(cfg(backend), recs))
    assert [(r["id"], r["status"], r["tests_total"]) for r in out] == [("js", "passed", 3),
                                                                      ("py", "passed", 1)]
    with pytest.raises(ValueError, match="record 1: 'language' must be one of python, "
                       "javascript"):
        list(run_records(cfg(backend), [{**recs[0], "language": "ruby"}]))
