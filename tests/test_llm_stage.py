"""LLMStage against a real HTTP server: rejects, tokens, seeds, breaker, resume from cache."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import LLMConfig
from pipeline.llm.client import ChatReply
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.record import RejectReason, Sample
from pipeline.stage import FatalStageError
from pipeline.stages.llm_stage import LLMStage
from tests.fake_openai_server import FakeOpenAIServer, Reply


class EchoStage(LLMStage):
    """Asks about `seed`; the reply becomes `response`. 'skip' seeds pass through."""

    name = "echo"
    inputs = ("seed",)
    outputs = ("response",)

    def accepts(self, sample: Sample) -> bool:
        return sample.seed != "skip"

    def build_messages(self, sample: Sample) -> list[dict[str, Any]]:
        return [{"role": "user", "content": sample.seed}]

    def parse_reply(self, sample: Sample, reply: ChatReply) -> list[Sample]:
        if reply.text == "echo: crash":
            raise ValueError("parser bug")
        if not reply.text:
            return [sample.reject(self.name, RejectReason.UNPARSEABLE, "empty")]
        sample.response = reply.text
        return [sample]


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def cfg(**kw: Any) -> LLMConfig:
    base: dict[str, Any] = dict(backoff_base_s=0.01, backoff_max_s=0.05, max_retries=1,
                                timeout_s=5.0)
    return LLMConfig(**{**base, **kw})


def samples(n: int, prefix: str = "s") -> list[Sample]:
    out = []
    for i in range(n):
        s = Sample(strategy="test", seed=f"{prefix}{i}")
        s.id = f"{prefix}-id-{i}"
        out.append(s)
    return out


def run_stage(stage: LLMStage, batch: list[Sample]) -> list[Sample]:
    stage.setup()
    try:
        return stage(batch)
    finally:
        stage.teardown()


def by_seed(out: list[Sample]) -> dict[str, Sample]:
    return {s.seed: s for s in out}


def test_tokens_model_and_counters(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.handler = lambda req: Reply(f"echo: {req['messages'][-1]['content']}",
                                            prompt_tokens=11, completion_tokens=22)
    stage = EchoStage(LLMEndpoint(fake_openai.base_url, "fake-model"), cfg(), None, seed=0)
    out = run_stage(stage, samples(5) + [Sample(seed="skip")])
    assert len(out) == 6
    done = [s for s in out if s.response]
    assert {s.response for s in done} == {f"echo: s{i}" for i in range(5)}
    for s in done:
        assert s.tokens == {"echo_prompt": 11, "echo_completion": 22}
        assert s.model == "fake-model"
    assert by_seed(out)["skip"].response == "" and not by_seed(out)["skip"].tokens
    st = stage.stats()
    assert (st["requests"], st["prompt_tokens"], st["completion_tokens"]) == (5, 55, 110)
    assert st.get("cache_hits", 0) == 0 and st["out"] == 5  # "skip" is not its own
    assert st["received"] == st["in"] == 5


def test_picklable_before_and_after_setup(fake_openai: FakeOpenAIServer) -> None:
    stage = EchoStage(LLMEndpoint(fake_openai.base_url, "m"), cfg(), None, seed=0)
    clone = pickle.loads(pickle.dumps(stage))
    stage.setup()
    try:
        pickle.dumps(stage)  # runtime handles are dropped, not pickled
    finally:
        stage.teardown()
    assert run_stage(clone, samples(1))[0].response == "echo: s0"


def test_seed_is_derived_from_sample_id(fake_openai: FakeOpenAIServer) -> None:
    ep = LLMEndpoint(fake_openai.base_url, "m")
    run_stage(EchoStage(ep, cfg(), None, seed=0), samples(3))
    run_stage(EchoStage(ep, cfg(), None, seed=0), samples(3))
    run_stage(EchoStage(ep, cfg(), None, seed=7), samples(3))
    seeds = [r["seed"] for r in fake_openai.requests]
    first, second, other_run_seed = seeds[:3], seeds[3:6], seeds[6:]
    assert sorted(first) == sorted(second)  # rerun: identical requests
    assert len(set(first)) == 3 and not set(first) & set(other_run_seed)
    assert all(r["temperature"] == 0.7 and r["top_p"] == 0.95 for r in fake_openai.requests)


def test_400_rejects_that_sample_only(fake_openai: FakeOpenAIServer) -> None:
    def handler(req: dict[str, Any]) -> Reply:
        if req["messages"][-1]["content"] == "s1":
            return Reply.error(400, "maximum context length is 4096 tokens")
        return Reply(f"echo: {req['messages'][-1]['content']}")

    fake_openai.handler = handler
    stage = EchoStage(LLMEndpoint(fake_openai.base_url, "m"), cfg(max_retries=3), None, seed=0)
    out = by_seed(run_stage(stage, samples(3)))
    bad = out["s1"]
    assert bad.reject_reason is RejectReason.LLM_BAD_REQUEST and bad.reject_stage == "echo"
    assert "maximum context length" in bad.reject_detail and "s-id-1" in bad.reject_detail
    assert sum(r["messages"][-1]["content"] == "s1" for r in fake_openai.requests) == 1
    assert out["s0"].response == "echo: s0" and out["s2"].response == "echo: s2"
    assert stage.stats()["dropped_llm_bad_request"] == 1


def test_500_then_success_and_429_are_retried(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.script.extend([Reply.error(500), Reply.error(429)])
    stage = EchoStage(LLMEndpoint(fake_openai.base_url, "m"), cfg(max_retries=2), None, seed=0)
    out = run_stage(stage, samples(2))
    assert all(s.response.startswith("echo: ") for s in out)
    assert len(fake_openai.requests) == 4 and stage.stats()["retries"] == 2


def test_hang_garbage_and_parser_crash_become_rejects(fake_openai: FakeOpenAIServer) -> None:
    def handler(req: dict[str, Any]) -> Reply:
        content = req["messages"][-1]["content"]
        return {"hang": Reply.hang_forever(), "garbage": Reply.garbage(),
                "empty": Reply("")}.get(content, Reply(f"echo: {content}"))

    fake_openai.handler = handler
    batch = [Sample(seed=s, id=s) for s in ("hang", "garbage", "empty", "crash", "fine")]
    stage = EchoStage(LLMEndpoint(fake_openai.base_url, "m"), cfg(timeout_s=0.3), None, seed=0)
    out = by_seed(run_stage(stage, batch))
    assert out["hang"].reject_reason is RejectReason.LLM_UNREACHABLE
    assert "timeout_s=0.3" in out["hang"].reject_detail
    assert out["garbage"].reject_reason is RejectReason.LLM_ERROR
    assert out["empty"].reject_reason is RejectReason.UNPARSEABLE
    assert out["crash"].reject_reason is RejectReason.STAGE_CRASH
    assert "parser bug" in out["crash"].reject_detail
    assert out["fine"].response == "echo: fine"


def test_concurrency_bound_through_the_stage(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.latency_s = 0.05
    stage = EchoStage(LLMEndpoint(fake_openai.base_url, "m"), cfg(max_in_flight=8), None, seed=0)
    out = run_stage(stage, samples(40))
    assert all(not s.rejected for s in out)
    assert fake_openai.max_in_flight == 8  # the whole batch is sent concurrently, bounded


def test_batches_from_several_threads_share_the_bound(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.latency_s = 0.05
    stage = EchoStage(LLMEndpoint(fake_openai.base_url, "m"), cfg(max_in_flight=6), None, seed=0)
    stage.setup()
    try:
        with ThreadPoolExecutor(3) as pool:
            outs = list(pool.map(stage, [samples(10, p) for p in "abc"]))
    finally:
        stage.teardown()
    assert all(s.response == f"echo: {s.seed}" for out in outs for s in out)
    assert fake_openai.max_in_flight == 6 and len(fake_openai.requests) == 30


def test_server_death_aborts_then_resume_pays_only_the_rest(tmp_path: Path) -> None:
    cache = str(tmp_path / "llm_cache.sqlite")
    conf = cfg(max_in_flight=4, abort_after_failures=3)
    batch = samples(40)
    with FakeOpenAIServer(latency_s=0.01) as first:
        first.die_after = 10
        stage = EchoStage(LLMEndpoint(first.base_url, "m"), conf, cache, seed=0)
        with pytest.raises(FatalStageError) as exc:
            run_stage(stage, [Sample.from_dict(s.to_dict()) for s in batch])
        served = first.served
    msg = str(exc.value)
    assert f"LLM server at {first.base_url} unreachable" in msg
    assert "rerun the same command with the same --output to resume from the cache" in msg
    assert served >= 10

    with FakeOpenAIServer() as second:
        stage = EchoStage(LLMEndpoint(second.base_url, "m"), conf, cache, seed=0)
        out = run_stage(stage, batch)
        assert all(s.response.startswith("echo: ") for s in out)
        assert len(second.requests) == 40 - served
        assert stage.stats()["cache_hits"] == served
        answered = {r["messages"][-1]["content"] for r in second.requests}
        assert len(answered) == 40 - served


def test_breaker_needs_consecutive_failures(fake_openai: FakeOpenAIServer) -> None:
    # alternating hang/success: never `abort_after_failures` unreachable in a row
    fake_openai.handler = lambda req: (Reply.hang_forever()
                                       if int(req["messages"][-1]["content"][1:]) % 2
                                       else Reply("ok"))
    stage = EchoStage(LLMEndpoint(fake_openai.base_url, "m"),
                      cfg(timeout_s=0.2, max_retries=0, max_in_flight=1,
                          abort_after_failures=2), None, seed=0)
    out = run_stage(stage, samples(6))
    assert sum(s.reject_reason is RejectReason.LLM_UNREACHABLE for s in out) == 3



def test_wrong_model_name_stops_the_run_instead_of_rejecting_everything(
        fake_openai: FakeOpenAIServer) -> None:
    fake_openai.handler = lambda _req: Reply.error(404, "model 'nope' does not exist")
    stage = EchoStage(LLMEndpoint(fake_openai.base_url, "nope"),
                      cfg(abort_after_failures=3, max_retries=0, max_in_flight=1), None, seed=0)
    with pytest.raises(FatalStageError, match=r"refused 3 requests in a row with HTTP 404"):
        run_stage(stage, samples(6))
    assert len(fake_openai.requests) < 6  # stopped early (one more may already be out)
