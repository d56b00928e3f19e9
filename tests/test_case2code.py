"""Case2Code: inputs from the tests' literal calls, outputs computed by running the verified
function, answers parsed from real Qwen replies and checked on held-out pairs."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import Case2CodeConfig, LLMConfig, SandboxConfig
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.parse import ParseFailure
from pipeline.record import ExecStatus, Execution, RejectReason, Sample
from pipeline.seeds.tasks import load_seed_tasks, task_samples
from pipeline.stages.case2code import (
    Case2CodeCasesStage,
    Case2CodeCheckStage,
    Case2CodeInferStage,
    case_function,
    literal_calls,
    parse_infer_reply,
    probe_script,
    read_outputs,
    split_cases,
)
from tests.fake_openai_server import FakeOpenAIServer, Reply

FIXTURE = Path(__file__).parent / "fixtures" / "replies" / "strategies" / "qwen05b_case2code.json"
RECORDS = json.loads(FIXTURE.read_text())
DIGIT_SUM = "def digit_sum(n):\n    return sum(int(d) for d in str(abs(n)))"
DIGIT_TESTS = ("assert digit_sum(123) == 6\nassert digit_sum(0) == 0\nx = 5\n"
               "assert digit_sum(x) == 5\nassert digit_sum(9999) == 36\n"
               "assert digit_sum(-45) == 9\nassert digit_sum(123) == 6")


def _probe_locally(code: str, calls: list[str]) -> str:
    """What the sandbox's stdout would hold (the sandbox itself: test_..._in_the_sandbox)."""
    buf = io.StringIO()
    env: dict = {}
    with contextlib.redirect_stdout(buf):
        exec(code, env)
        exec(probe_script(calls), env)
    return buf.getvalue()


def test_literal_calls_and_outputs() -> None:
    name, calls = literal_calls(DIGIT_SUM, DIGIT_TESTS)
    assert name == "digit_sum"  # `digit_sum(x)` has no literal argument; repeats count once
    assert calls == ["digit_sum(123)", "digit_sum(0)", "digit_sum(9999)", "digit_sum(-45)"]
    code = DIGIT_SUM + "\n\ndef noisy(n):\n    print('@@case2code@@ [0, \"99\"]x')\n    return 1"
    stdout = _probe_locally(code, [*calls, "digit_sum('a')", "noisy(1)"])
    pairs = read_outputs(stdout, [*calls, "digit_sum('a')", "noisy(1)"])
    assert pairs == [("digit_sum(123)", "6"), ("digit_sum(0)", "0"), ("digit_sum(9999)", "36"),
                     ("digit_sum(-45)", "9"), ("noisy(1)", "1")]  # the raising call is skipped
    assert read_outputs("@@case2code@@ [0, \"<object at 0x1>\"]", calls) == []  # not a literal
    assert literal_calls("x = 1", "assert f(1)") == ("", [])


def test_split_cases_holds_out_at_least_one() -> None:
    pairs = [(f"f({i})", str(i)) for i in range(5)]
    shown, held = split_cases(pairs, "id1", Case2CodeConfig(min_shown=2, held_out=2))
    assert len(shown) == 3 and len(held) == 2 and sorted(shown + held) == pairs
    assert split_cases(pairs, "id1", Case2CodeConfig()) == (shown, held)  # deterministic
    shown, held = split_cases(pairs[:3], "id1", Case2CodeConfig(min_shown=2, held_out=5))
    assert (len(shown), len(held)) == (2, 1)
    assert split_cases(pairs[:2], "id1", Case2CodeConfig(min_shown=2)) == ([], [])


def test_real_replies_parse() -> None:
    wrong, right = (r["reply"] for r in RECORDS)
    tests = "assert collapse_whitespace('a  b') == 'a b'"
    code = parse_infer_reply(wrong, "collapse_whitespace", tests)
    assert code == "def collapse_whitespace(s):\n    return s.replace(' ', '', 0)"
    assert parse_infer_reply(right, "digit_sum", "assert digit_sum(12) == 3").startswith(
        "def digit_sum(n):")
    # the answer names another function: the held-out tests cannot call it
    failure = parse_infer_reply(right, "sum_digits", "assert sum_digits(12) == 3")
    assert isinstance(failure, ParseFailure)
    assert isinstance(parse_infer_reply("It adds digits.", "f", "assert f(1) == 1"),
                      ParseFailure)
    assert case_function("assert digit_sum(1) == 1") == "digit_sum"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def _passed(code: str, tests: str, strategy: str = "oss_instruct") -> Sample:
    s = Sample(strategy=strategy, instruction="task", code=code, tests=tests,
               execution=Execution(ExecStatus.PASSED))
    s.assign_id()
    return s


@pytest.mark.docker
def test_cases_infer_and_check_in_the_sandbox(server: FakeOpenAIServer) -> None:
    """Seed task and passed sample -> pairs from the real sandbox -> real Qwen answers."""
    seed = next(s for s in task_samples(load_seed_tasks(), "case2code")
                if s.seed_ref == "seed_tasks:collapse_whitespace")
    seed.execution = Execution(ExecStatus.PASSED)
    other = _passed(DIGIT_SUM, DIGIT_TESTS)
    no_literals = _passed("def f(x):\n    return x", "y = 2\nassert f(y) == 2")
    cases = Case2CodeCasesStage(SandboxConfig(timeout_s=10), Case2CodeConfig())
    try:
        out = cases([seed, other, no_literals])
    finally:
        cases.teardown()
    assert seed not in out and other in out and no_literals in out  # the seed is consumed
    children = [s for s in out if s.strategy == "case2code"]
    assert len(children) == 2 and cases.counters["no_cases"] == 1
    by_fn = {case_function(c.tests): c for c in children}
    ds = by_fn["digit_sum"]
    assert ds.parent_id == other.id and ds.round == 1 and ds.op == "case2code"
    assert ds.scores == {"case2code_shown": 2.0, "case2code_held_out": 2.0}
    assert sorted(ds.tests.splitlines()) == sorted([
        "assert digit_sum(123) == 6", "assert digit_sum(0) == 0",
        "assert digit_sum(9999) == 36", "assert digit_sum(-45) == 9"])
    shown = [line for line in ds.tests.splitlines()[2:]]
    assert all(line.split(" == ")[0][7:] in ds.instruction for line in shown)
    held = ds.tests.splitlines()[:2]
    assert not any(line.split(" == ")[0][7:] in ds.instruction for line in held)
    assert by_fn["collapse_whitespace"].parent_id == seed.id

    replies = {"collapse_whitespace": RECORDS[0]["reply"], "digit_sum": RECORDS[1]["reply"]}
    server.handler = lambda body: Reply(text=next(
        v for k, v in replies.items() if f"`{k}`" in body["messages"][0]["content"]))
    cfg = LLMConfig(backend="openai", base_url=server.base_url, max_retries=0, cache=False)
    infer = Case2CodeInferStage(LLMEndpoint(server.base_url, "fake-model"), cfg, None, seed=0)
    check = Case2CodeCheckStage(SandboxConfig(timeout_s=10))
    try:
        answered = infer(out)
        final = check(answered)
    finally:
        infer.teardown()
        check.teardown()
    assert len(server.requests) == 2 and infer.counters["parsed"] == 2
    result = {case_function(s.tests): s for s in final if s.strategy == "case2code"}
    assert not result["digit_sum"].rejected
    assert result["digit_sum"].execution.tests_passed == 4
    # Qwen's `s.replace(' ', '', 0)` replaces nothing: the held-out pairs catch it
    assert result["collapse_whitespace"].reject_reason is RejectReason.EXEC_FAILED
    assert other in final and other.execution.tests_total == 0  # not re-run by the check
