"""Evol-Instruct: operator choice, reply parsing and the elimination step on real Qwen
replies (three prompt versions), and the rounds with lineage over HTTP."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import EvolConfig, LLMConfig
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.record import RejectReason, Sample
from pipeline.seeds.tasks import load_seed_tasks, task_samples
from pipeline.stages.evol_instruct import (
    EVOL_SCHEMA,
    EvolInstructGenerator,
    choose_operator,
    elimination_reason,
    function_names,
    parse_evolved,
    reply_question,
)
from tests.fake_openai_server import FakeOpenAIServer, Reply

FIXTURES = Path(__file__).parent / "fixtures" / "replies" / "strategies"
CFG = EvolConfig()
PARENT = ("Write a function `chunked(items, size)` that splits a list into consecutive "
          "chunks of length `size`; the last chunk may be shorter.")


def _verdicts(name: str) -> list[str]:
    out = []
    for r in json.loads((FIXTURES / name).read_text()):
        op = r["variables"].get("operator", "breadth")
        why = elimination_reason(r["variables"]["instruction"], parse_evolved(r["reply"], op),
                                 op, CFG)
        out.append(f"{op}:{why.split(':')[0] if why else 'kept'}")
    return out


def test_real_replies_elimination() -> None:
    """The 0.5B model mostly fails to evolve; the elimination step says how."""
    assert _verdicts("qwen05b_evol_v1.json") == [
        "add_constraints:lost_information", "rarer_requirement:lost_information",
        "more_reasoning:lost_information", "erroneous_code:prompt_words",
        "complexity:lost_information", "breadth:prompt_words"]
    assert _verdicts("qwen05b_evol_v2.json") == [
        "add_constraints:copied", "rarer_requirement:prompt_words",
        "more_reasoning:lost_information", "erroneous_code:kept",
        "complexity:lost_information", "breadth:copied"]
    assert _verdicts("qwen05b_evol.json") == [
        "add_constraints:copied", "rarer_requirement:lost_information",
        "more_reasoning:lost_information", "erroneous_code:prompt_words",
        "complexity:lost_information", "breadth:copied"]


def test_real_erroneous_code_reply_keeps_its_code_block() -> None:
    [rec] = [r for r in json.loads((FIXTURES / "qwen05b_evol_v2.json").read_text())
             if r["variables"].get("operator") == "erroneous_code"]
    evolved = parse_evolved(rec["reply"], "erroneous_code")
    assert evolved.startswith("Write a recursive function that flattens a list")
    assert evolved.count("```") == 2 and "def flatten_deep(lst):" in evolved
    assert "**" not in evolved.splitlines()[0]


def test_parse_evolved_variants() -> None:
    assert parse_evolved("Sure!\nNew question: Do X with `f(a)`.", "add_constraints") == \
        "Do X with `f(a)`."
    assert parse_evolved("**Rewritten Prompt:** Do Y.\n\n### Solution\ndef f(): ...",
                         "complexity") == "Do Y."
    text = "New question:\nDo Z.\n```python\ndef f():\n    return 1\n```\nMore."
    assert parse_evolved(text, "add_constraints") == "Do Z."
    assert parse_evolved(text, "erroneous_code").endswith("return 1\n```")
    assert parse_evolved("", "breadth") == ""
    buggy = "New question: Fix `f`.\nHere is the buggy code:\n```python\ndef f():\n    pass\n```"
    assert parse_evolved(buggy, "erroneous_code").endswith("pass\n```")
    assert parse_evolved(buggy, "complexity") == "Fix `f`."


def test_elimination_reasons() -> None:
    longer = PARENT + " Raise ValueError when size is not a positive integer."
    assert elimination_reason(PARENT, longer, "add_constraints", CFG) is None
    assert elimination_reason(PARENT, PARENT, "complexity", CFG).startswith("copied")
    assert elimination_reason(PARENT, "Split a list into chunks of a given size, each one "
                              "no longer than size, and return the list of them all.",
                              "add_constraints", CFG).startswith("lost_information")
    assert elimination_reason(PARENT, "Write `chunked(items, size)` for lists.",
                              "more_reasoning", CFG).startswith("shorter")
    assert elimination_reason(PARENT, "I'm sorry, I can't do that.", "breadth",
                              CFG).startswith("refusal")
    assert elimination_reason(PARENT, "New question: " + longer, "add_constraints",
                              CFG).startswith("prompt_words")
    assert elimination_reason(PARENT, "", "breadth", CFG).startswith("empty")
    assert elimination_reason(PARENT, PARENT.replace("consecutive chunks of length",
                                                     "successive pieces, each of size"),
                              "breadth", CFG).startswith("not_new")
    assert elimination_reason(PARENT, "Write `pairwise_sums(xs)` returning the sums of "
                              "adjacent pairs of a list.", "breadth", CFG) is None
    assert function_names("Name it `flatten_deep`; `x` is a list, call `g(x)`.") == \
        ["flatten_deep", "g"]


def test_choose_operator_is_deterministic_and_spread() -> None:
    ops = CFG.operators
    picks = Counter(choose_operator(f"id{i}", 1, ops) for i in range(600))
    assert set(picks) == set(ops) and min(picks.values()) > 60
    assert choose_operator("abc", 2, ops) == choose_operator("abc", 2, ops)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def test_rounds_with_lineage_over_http(server: FakeOpenAIServer) -> None:
    seeds = task_samples(load_seed_tasks(), "evol_instruct", 2)
    fail_id = seeds[1].seed_ref

    def handler(body: dict) -> Reply:
        prompt = body["messages"][0]["content"]
        question = prompt.split("question:\n", 1)[1].split("\n\n")[0]
        if "caesar_shift" in question and "Round" not in question:  # seed 1, round 1
            return Reply(text="New question: " + question)  # a copy: eliminated
        return Reply(text=f"Here you go.\nNew question: {question} Round extra words here "
                          "make it longer.\n\n### Solution\n```python\npass\n```")

    server.handler = handler
    cfg = LLMConfig(backend="openai", base_url=server.base_url, max_retries=0, cache=False)
    evol = EvolConfig(rounds=3, operators=["add_constraints", "complexity"])
    stage = EvolInstructGenerator(LLMEndpoint(server.base_url, "fake-model"), cfg, None, evol,
                                  seed=0)
    other = Sample(strategy="self_instruct", instruction="keep me")
    try:
        out = stage([*seeds, other])
    finally:
        stage.teardown()
    assert other in out and not any(s in out for s in seeds)
    assert len(server.requests) == 4  # seed 0: 3 rounds; seed 1: round 1 only
    kept = sorted((s for s in out if s.strategy == "evol_instruct" and not s.rejected),
                  key=lambda s: s.round)
    assert [s.round for s in kept] == [1, 2, 3]
    assert kept[0].parent_id == seeds[0].id
    assert kept[1].parent_id == kept[0].id and kept[2].parent_id == kept[1].id
    assert all(s.op in ("evol:add_constraints", "evol:complexity") for s in kept)
    assert all(s.op == f"evol:{choose_operator(s.parent_id, s.round, evol.operators)}"
               for s in kept)
    assert kept[2].instruction.count("Round extra words") == 3 and "pass" not in kept[2].instruction
    [failed] = [s for s in out if s.rejected]
    assert failed.reject_reason is RejectReason.FILTERED and failed.seed_ref == fail_id
    assert "copied" in failed.reject_detail
    st = stage.counters
    assert (st["generated"], st["parsed"], st["novel"], st["eliminated_copied"]) == (4, 4, 3, 1)


def test_json_mode_sends_a_schema_and_reads_the_question(server: FakeOpenAIServer) -> None:
    evolved = ("Write `collatz_steps(n)` returning how many steps the Collatz process (halve "
               "even numbers, map odd n to 3n+1) takes to reach 1 from a positive integer n, "
               "and raise ValueError for n < 1 or for a value that is not an integer.")
    server.handler = lambda body: Reply(text="```json\n" + json.dumps({"question": evolved})
                                        + "\n```")
    cfg = LLMConfig(backend="embedded", base_url=server.base_url, max_retries=0, cache=False,
                    response_format="json_schema")
    stage = EvolInstructGenerator(LLMEndpoint(server.base_url, "fake-model"), cfg, None,
                                  EvolConfig(rounds=1, operators=["add_constraints"]), seed=1)
    seed = next(s for s in task_samples(load_seed_tasks(), "evol_instruct")
                if "collatz_steps" in s.instruction)
    try:
        out = stage([seed])
    finally:
        stage.teardown()
    body = server.requests[0]
    assert body["response_format"] == {"type": "json_object", "schema": EVOL_SCHEMA}
    assert '"question"' in body["messages"][0]["content"]
    assert "New question:" not in body["messages"][0]["content"]
    assert [s.instruction for s in out if not s.rejected] == [evolved]
    assert reply_question(f"New question: {evolved}", json_mode=True).endswith(evolved)
