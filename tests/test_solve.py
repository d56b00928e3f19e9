"""SolveStage: solution + tests for generated instructions, on real Qwen replies and over
HTTP with several candidates per instruction; pass counts per instruction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import LLMConfig
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.parse import ParsedReply, ParseFailure
from pipeline.record import ExecStatus, Execution, RejectReason, Sample
from pipeline.stages.solve import SOLVE_SCHEMA, SolveStage, parse_solve_reply, record_pass_counts
from tests.fake_openai_server import FakeOpenAIServer, Reply

FIXTURE = Path(__file__).parent / "fixtures" / "replies" / "strategies" / "qwen05b_solve.json"
RECORDS = json.loads(FIXTURE.read_text())
GOOD = ("### Solution\n```python\ndef add(a, b):\n    return a + b\n```\n\n### Tests\n"
        "```python\nassert add(1, 2) == 3\n```\n")
ERRONEOUS = ("Fix the bug: make `add(a, b)` return the sum.\n\n```python\ndef add(a, b):\n"
             "    return a - b\n```")


def test_real_replies() -> None:
    """Qwen answers without headers: code and asserts in one block, prose after it."""
    first, second, third = (parse_solve_reply(r["reply"]) for r in RECORDS)
    assert isinstance(first, ParsedReply) and first.solution.startswith("def make_acronym(")
    assert first.tests.count("assert make_acronym(") == 3 and "assert" not in first.solution
    assert isinstance(second, ParsedReply) and second.tests.count("assert nested_depth(") == 4
    # cut off by max_tokens inside the one code block
    assert isinstance(third, ParseFailure) and third.reason is RejectReason.SYNTAX_ERROR


def test_json_reply_and_garbage() -> None:
    text = ('Here: {"solution": "def add(a, b):\\n    return a + b", '
            '"tests": ["assert add(1, 2) == 3"]}')
    parsed = parse_solve_reply(text, json_mode=True)
    assert isinstance(parsed, ParsedReply) and parsed.tests == "assert add(1, 2) == 3"
    assert parse_solve_reply("no json here", json_mode=True).reason is RejectReason.UNPARSEABLE
    assert parse_solve_reply("   ").reason is RejectReason.UNPARSEABLE
    assert parse_solve_reply("I would write a loop.").reason is RejectReason.UNPARSEABLE


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def _stage(base_url: str, n: int = 1, fmt: str = "markdown") -> SolveStage:
    cfg = LLMConfig(backend="openai", base_url=base_url, max_retries=0, cache=False,
                    response_format=fmt)
    return SolveStage(LLMEndpoint(base_url, "fake-model"), cfg, None,
                      strategies=frozenset({"self_instruct", "evol_instruct"}), n=n, seed=1)


def _instruction(text: str, strategy: str = "evol_instruct") -> Sample:
    s = Sample(strategy=strategy, parent_id="p0", round=2, op="evol:erroneous_code",
               instruction=text)
    s.assign_id()
    return s


def test_candidates_keep_lineage_and_skip_the_rest(server: FakeOpenAIServer) -> None:
    replies = iter([GOOD, "Sorry, I can't."])
    server.handler = lambda body: Reply(text=next(replies))
    inst = _instruction(ERRONEOUS)
    has_code = Sample(strategy="oss_instruct", instruction="x", code="def f(): pass")
    c2c = Sample(strategy="case2code", instruction="infer it", tests="assert f() == 1")
    stage = _stage(server.base_url, n=2)
    try:
        out = stage([inst, has_code, c2c])
    finally:
        stage.teardown()
    assert len(server.requests) == 2 and len({r["seed"] for r in server.requests}) == 2
    assert ERRONEOUS in server.requests[0]["messages"][0]["content"]
    assert has_code in out and c2c in out
    cands = [s for s in out if s.strategy == "evol_instruct"]
    good = next(s for s in cands if not s.rejected)
    bad = next(s for s in cands if s.rejected)
    # the erroneous code in the instruction is not taken for the solution
    assert good.code == "def add(a, b):\n    return a + b"
    assert (good.parent_id, good.round, good.op) == ("p0", 2, "evol:erroneous_code")
    assert good.instruction == ERRONEOUS and good.scores["solve_n"] == 2
    assert bad.reject_reason is RejectReason.UNPARSEABLE and bad.parent_id == "p0"
    assert stage.counters["generated_evol_instruct"] == 2
    assert stage.counters["parsed_evol_instruct"] == 1


def test_json_mode_sends_the_schema(server: FakeOpenAIServer) -> None:
    server.handler = lambda body: Reply(text=json.dumps(
        {"solution": "def add(a, b):\n    return a + b", "tests": ["assert add(1, 2) == 3"]}))
    stage = _stage(server.base_url, fmt="json_schema")
    try:
        [out] = stage([_instruction("Write `add(a, b)`.", "self_instruct")])
    finally:
        stage.teardown()
    assert server.requests[0]["response_format"]["json_schema"]["schema"] == SOLVE_SCHEMA
    assert not out.rejected and out.tests == "assert add(1, 2) == 3"


def test_record_pass_counts() -> None:
    def cand(k: int, status: ExecStatus | None, parent: str = "p") -> Sample:
        s = Sample(strategy="self_instruct", parent_id=parent, instruction="task " + parent,
                   code=f"v{k}", scores={"solve_n": 4.0})
        if status is not None:
            s.execution = Execution(status)
            if status is not ExecStatus.PASSED:
                s.reject("execute", RejectReason.EXEC_FAILED)
        else:
            s.reject("solve", RejectReason.UNPARSEABLE)
        return s

    group = [cand(0, ExecStatus.PASSED), cand(1, ExecStatus.FAILED), cand(2, None),
             cand(3, ExecStatus.PASSED)]
    other = [cand(0, ExecStatus.FAILED, "q")]
    summary = record_pass_counts([*group, *other, Sample(strategy="oss_instruct")])
    assert [s.scores["solve_passed"] for s in group] == [2.0] * 4
    assert group[0].scores["solve_pass_rate"] == 0.5 and other[0].scores["solve_pass_rate"] == 0
    assert summary == {"self_instruct": {"instructions": 2, "mean_pass_rate": 0.25,
                                         "pass_rate_histogram": {0.0: 1, 0.5: 1}}}
