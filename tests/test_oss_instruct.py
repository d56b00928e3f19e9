"""OssInstructGenerator: prompts, request params, reply parsing, and end to end over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import LLMConfig
from pipeline.llm.client import ChatReply
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.record import RejectReason, Sample
from pipeline.stages.oss_instruct import OSS_INSTRUCT_SCHEMA, OssInstructGenerator
from tests.fake_openai_server import FakeOpenAIServer, Reply

FIXTURES = Path(__file__).parent / "fixtures" / "replies"
SEED = "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    return min(x, hi)"
GOOD = """### Problem
Write a function `clamp_all(values, lo, hi)` that clamps every number into [lo, hi].

### Solution
```python
def clamp_all(values, lo, hi):
    return [max(lo, min(v, hi)) for v in values]
```

### Tests
```python
assert clamp_all([1, 5, 9], 2, 8) == [2, 5, 8]
assert clamp_all([], 0, 1) == []
```
"""
GOOD_JSON = json.dumps({
    "problem": "Write `clamp_all(values, lo, hi)`.",
    "solution": "def clamp_all(values, lo, hi):\n    return [max(lo, min(v, hi)) for v in values]",
    "tests": ["assert clamp_all([1, 5, 9], 2, 8) == [2, 5, 8]"]})
GARBAGE = "I'm sorry, as an AI model I think the snippet clamps values. " * 10


def _seed(text: str = SEED, ref: str = "lib/clamp.py:10-13") -> Sample:
    s = Sample(strategy="oss_instruct", seed=text, seed_ref=ref)
    s.assign_id()
    return s


def _stage(base_url: str = "http://127.0.0.1:9/v1", **kw: object) -> OssInstructGenerator:
    fmt = kw.pop("response_format", "markdown")
    backend = kw.pop("backend", "openai")
    cfg = LLMConfig(backend=backend, base_url=base_url, response_format=fmt, max_retries=0,
                    cache=False)
    kw.setdefault("samples_per_seed", 1)
    kw.setdefault("seed", 0)
    return OssInstructGenerator(LLMEndpoint(base_url, "fake-model"), cfg, None, **kw)


def _reply(text: str) -> ChatReply:
    return ChatReply(text=text, finish_reason="stop", prompt_tokens=100, completion_tokens=50)


def test_build_messages_renders_the_seed() -> None:
    stage = _stage()
    [msg] = stage.build_messages(_seed())
    assert msg["role"] == "user"
    assert SEED in msg["content"] and "### Tests" in msg["content"]
    assert "{{" not in msg["content"]
    assert stage.accepts(_seed()) and not stage.accepts(_seed(text="  "))
    [json_msg] = _stage(response_format="json_schema").build_messages(_seed())
    assert SEED in json_msg["content"] and '"tests"' in json_msg["content"]


def test_request_params_per_format_and_backend() -> None:
    assert _stage().request_params(_seed()) == {}
    openai_fmt = _stage(response_format="json_schema").request_params(_seed())
    assert openai_fmt["response_format"]["type"] == "json_schema"
    assert openai_fmt["response_format"]["json_schema"]["schema"] == OSS_INSTRUCT_SCHEMA
    llama_fmt = _stage(response_format="json_schema", backend="embedded").request_params(_seed())
    assert llama_fmt["response_format"] == {"type": "json_object", "schema": OSS_INSTRUCT_SCHEMA}


def test_parse_reply_makes_a_child_of_the_seed() -> None:
    seed = _seed()
    [child] = _stage().parse_reply(seed, _reply(GOOD))
    assert not child.rejected
    assert (child.parent_id, child.seed_ref, child.strategy) == (seed.id, seed.seed_ref,
                                                                "oss_instruct")
    assert child.seed == SEED
    assert child.instruction.startswith("Write a function `clamp_all(")
    assert child.code == "def clamp_all(values, lo, hi):\n    return [max(lo, min(v, hi)) " \
                         "for v in values]"
    assert child.tests.count("assert") == 2
    assert child.response == f"```python\n{child.code}\n```"
    assert child.id == Sample(**{**child.__dict__, "id": ""}).assign_id() != seed.id


def test_parse_reply_rejects_without_raising() -> None:
    seed = _seed()
    [bad] = _stage().parse_reply(seed, _reply(GARBAGE))
    assert bad.reject_reason is RejectReason.UNPARSEABLE
    assert bad.reject_stage == "oss_instruct" and bad.parent_id == seed.id
    assert GARBAGE[:300] in bad.reject_detail and GARBAGE[:301] not in bad.reject_detail
    [other] = _stage().parse_reply(seed, _reply(GARBAGE + "!"))
    assert other.id != bad.id  # distinct rejected replies keep distinct ids
    no_tests = GOOD.split("### Tests")[0]
    [nt] = _stage().parse_reply(seed, _reply(no_tests))
    assert nt.reject_reason is RejectReason.NO_TESTS


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def _run(stage: OssInstructGenerator, samples: list[Sample]) -> list[Sample]:
    try:
        return stage(samples)
    finally:
        stage.teardown()


def test_end_to_end_over_http(server: FakeOpenAIServer) -> None:
    seeds = [_seed(), _seed(SEED.replace("clamp", "bound"), "lib/b.py:1-4")]
    by_seed = {seeds[0].seed: GOOD, seeds[1].seed: GARBAGE}
    server.handler = lambda body: Reply(text=next(
        v for k, v in by_seed.items() if k in body["messages"][-1]["content"]))
    stage = _stage(server.base_url)
    out = _run(stage, seeds)
    assert len(server.requests) == 2
    assert all("seed" in r and "response_format" not in r for r in server.requests)
    good = next(s for s in out if not s.rejected)
    bad = next(s for s in out if s.rejected)
    assert good.parent_id == seeds[0].id and good.model == "fake-model"
    assert good.tokens["oss_instruct_prompt"] == 10
    assert bad.parent_id == seeds[1].id
    assert bad.reject_reason is RejectReason.UNPARSEABLE and "I'm sorry" in bad.reject_detail
    assert stage.stats()["out"] == 1 and stage.stats()["dropped_unparseable"] == 1


def test_end_to_end_json_mode(server: FakeOpenAIServer) -> None:
    server.script.extend([Reply(text=f"```json\n{GOOD_JSON}\n```"), Reply(text='{"problem": ')])
    stage = _stage(server.base_url, response_format="json_schema")
    out = _run(stage, [_seed(), _seed(ref="lib/other.py:1-4")])
    assert server.requests[0]["response_format"]["type"] == "json_schema"
    assert sorted(s.reject_reason.value if s.rejected else "ok" for s in out) == \
        ["ok", "unparseable"]


def test_samples_per_seed_sends_distinct_seeds(server: FakeOpenAIServer) -> None:
    server.handler = lambda body: Reply(text=GOOD)
    seed = _seed()
    stage = _stage(server.base_url, samples_per_seed=3, seed=5)
    out = _run(stage, [seed])
    seeds_sent = [r["seed"] for r in server.requests]
    assert len(seeds_sent) == 3 and len(set(seeds_sent)) == 3
    assert len(out) == 3 and all(s.parent_id == seed.id and not s.rejected for s in out)
    # identical replies: identical ids, for the dedup stage to collapse
    assert len({s.id for s in out}) == 1
    again = _run(_stage(server.base_url, samples_per_seed=3, seed=5), [seed])
    assert sorted(r["seed"] for r in server.requests[3:]) == sorted(seeds_sent)  # reproducible
    assert len(again) == 3


def _fixture(name: str) -> list[dict]:
    return json.loads((FIXTURES / name).read_text())


def test_real_replies_over_http_with_copies_and_junk(server: FakeOpenAIServer) -> None:
    """Real Qwen replies (5 copy the prompt's example) and real SmolLM2 junk, end to end."""
    records = _fixture("qwen05b_markdown_v4.json") + _fixture("smollm2_markdown.json")[:2]
    replies = {r["seed"]: r["reply"] for r in records[:12]}
    replies.update({r["seed"] + "\n# smol": r["reply"] for r in records[12:]})
    seeds = [_seed(text, f"ref{i}:1-5") for i, text in enumerate(replies)]

    def handler(body: dict) -> Reply:
        prompt = body["messages"][-1]["content"]
        return Reply(text=replies[max((s for s in replies if s in prompt), key=len)])

    server.handler = handler
    out = _run(_stage(server.base_url), seeds)
    reasons = [s.reject_reason.value if s.rejected else "ok" for s in out]
    assert reasons.count("ok") == 7
    assert reasons.count("duplicate") == 5  # the count_vowels example, copied
    assert reasons.count("unparseable") == 2  # SmolLM2: a bare code block, no problem
    for s in out:
        assert s.parent_id in {seed.id for seed in seeds} and s.id
        if s.rejected and s.reject_reason is RejectReason.DUPLICATE:
            assert "count_vowels" in s.reject_detail
    assert len({s.id for s in out}) == len(out)


@pytest.mark.model
def test_embedded_model_accepts_the_requests(tmp_path: Path) -> None:
    """The real llama.cpp server takes our request params in both formats (json_schema mode
    included: it answers 500 to OpenAI's `json_schema` form), and every reply ends parsed or
    rejected with a parse reason, never an LLM error. SmolLM2-135M keeps it to seconds."""
    from pipeline.llm.server import start_backend

    cfg = LLMConfig(backend="embedded", max_tokens=200, cache=False, max_retries=0,
                    embedded={"model": "smollm2-135m"})
    parse_reasons = {RejectReason.UNPARSEABLE, RejectReason.NO_TESTS,
                     RejectReason.SYNTAX_ERROR, RejectReason.DUPLICATE}
    with start_backend(cfg, tmp_path) as endpoint:
        for fmt in ("markdown", "json_schema"):
            stage_cfg = cfg.model_copy(update={"response_format": fmt})
            stage = OssInstructGenerator(endpoint, stage_cfg, None, samples_per_seed=1, seed=0)
            out = _run(stage, [_seed()])
            assert len(out) == 1
            [s] = out
            assert not s.rejected or s.reject_reason in parse_reasons, s.reject_detail
            assert s.tokens["oss_instruct_completion"] > 0
