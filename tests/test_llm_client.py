"""The LLM client against a real HTTP server: retries, faults, timeouts, concurrency."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from pipeline.config import LLMConfig
from pipeline.llm.client import ChatReply, LLMClient, LLMErrorKind, LLMRequestError
from pipeline.llm.endpoint import LLMEndpoint
from tests.fake_openai_server import FakeOpenAIServer, Reply

T = TypeVar("T")
MSGS = [{"role": "user", "content": "write a function"}]


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def fast_cfg(**kw: Any) -> LLMConfig:
    base: dict[str, Any] = dict(backoff_base_s=0.01, backoff_max_s=0.05, max_retries=2,
                                timeout_s=5.0)
    return LLMConfig(**{**base, **kw})


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _chat(url: str, cfg: LLMConfig, n: int = 1, **params: Any) -> list[ChatReply]:
    client = LLMClient(LLMEndpoint(url, "fake-model"), cfg)
    try:
        return list(await asyncio.gather(
            *[client.chat(MSGS, request_id=f"req-{i}", **params) for i in range(n)]))
    finally:
        await client.aclose()


def test_success_parses_text_and_tokens(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.script.append(Reply("def f(): pass", finish_reason="length",
                                    prompt_tokens=7, completion_tokens=3))
    [reply] = run(_chat(fake_openai.base_url, fast_cfg(), seed=42))
    assert reply == ChatReply("def f(): pass", "length", 7, 3, cached=False)
    [body] = fake_openai.requests
    assert body["model"] == "fake-model" and body["messages"] == MSGS
    assert (body["seed"], body["temperature"], body["top_p"], body["max_tokens"]) == \
        (42, 0.7, 0.95, 1024)


def test_500_then_success_is_retried(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.script.extend([Reply.error(500), Reply.error(503), Reply("fine")])
    [reply] = run(_chat(fake_openai.base_url, fast_cfg()))
    assert reply.text == "fine"
    assert len(fake_openai.requests) == 3


def test_429_is_retried_honouring_retry_after(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.script.extend([Reply.error(429, "slow down", headers={"Retry-After": "0.2"}),
                               Reply("after 429")])
    loop_time: list[float] = []

    async def go() -> ChatReply:
        t0 = asyncio.get_running_loop().time()
        [r] = await _chat(fake_openai.base_url, fast_cfg(backoff_max_s=1.0))
        loop_time.append(asyncio.get_running_loop().time() - t0)
        return r

    assert run(go()).text == "after 429"
    assert len(fake_openai.requests) == 2
    assert loop_time[0] >= 0.2


def test_400_is_not_retried_and_names_the_request(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.script.append(Reply.error(400, "prompt is too long: 9000 tokens"))
    with pytest.raises(LLMRequestError) as exc:
        run(_chat(fake_openai.base_url, fast_cfg(max_retries=5)))
    assert len(fake_openai.requests) == 1
    err = exc.value
    assert err.kind is LLMErrorKind.BAD_REQUEST and err.status == 400 and err.attempts == 1
    msg = str(err)
    assert "req-0" in msg and fake_openai.base_url + "/chat/completions" in msg
    assert "HTTP 400" in msg and "prompt is too long" in msg


def test_404_and_422_are_not_retried(fake_openai: FakeOpenAIServer) -> None:
    for status in (404, 422):
        fake_openai.requests.clear()
        fake_openai.script.append(Reply.error(status))
        with pytest.raises(LLMRequestError) as exc:
            run(_chat(fake_openai.base_url, fast_cfg()))
        assert exc.value.kind is LLMErrorKind.BAD_REQUEST
        assert len(fake_openai.requests) == 1


def test_500_forever_exhausts_retries(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.handler = lambda _req: Reply.error(500, "CUDA out of memory")
    with pytest.raises(LLMRequestError) as exc:
        run(_chat(fake_openai.base_url, fast_cfg(max_retries=3)))
    assert len(fake_openai.requests) == 4
    err = exc.value
    assert err.kind is LLMErrorKind.SERVER_ERROR and err.attempts == 4 and err.status == 500
    assert "after 4 attempt(s)" in str(err) and "CUDA out of memory" in str(err)


def test_hang_times_out_then_gives_up(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.handler = lambda _req: Reply.hang_forever()
    with pytest.raises(LLMRequestError) as exc:
        run(_chat(fake_openai.base_url, fast_cfg(timeout_s=0.3, max_retries=1)))
    assert len(fake_openai.requests) == 2
    assert exc.value.kind is LLMErrorKind.UNREACHABLE
    assert "timeout_s=0.3" in str(exc.value)


def test_garbage_body_is_retried_then_server_error(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.script.extend([Reply.garbage(), Reply("clean")])
    [reply] = run(_chat(fake_openai.base_url, fast_cfg()))
    assert reply.text == "clean"

    fake_openai.handler = lambda _req: Reply.garbage()
    with pytest.raises(LLMRequestError) as exc:
        run(_chat(fake_openai.base_url, fast_cfg(max_retries=1)))
    assert exc.value.kind is LLMErrorKind.SERVER_ERROR
    assert "unusable response body" in str(exc.value) and "bad gateway" in str(exc.value)


def test_connection_refused_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(LLMRequestError) as exc:
        run(_chat(url, fast_cfg(max_retries=1)))
    assert exc.value.kind is LLMErrorKind.UNREACHABLE and exc.value.attempts == 2
    assert url in str(exc.value) and "connection failed" in str(exc.value)


def test_server_killed_mid_request_is_unreachable(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.latency_s = 0.5

    async def go() -> list[Any]:
        client = LLMClient(LLMEndpoint(fake_openai.base_url, "m"), fast_cfg(max_retries=2))
        try:
            pending = asyncio.ensure_future(client.chat(MSGS, request_id="victim"))
            await asyncio.sleep(0.2)
            await asyncio.to_thread(fake_openai.kill)
            return list(await asyncio.gather(pending, return_exceptions=True))
        finally:
            await client.aclose()

    [err] = run(go())
    assert isinstance(err, LLMRequestError) and err.kind is LLMErrorKind.UNREACHABLE
    assert err.attempts == 3 and "connection failed" in str(err) and "victim" in str(err)
    assert len(fake_openai.requests) == 1  # the port is closed: retries never got in


def test_requests_in_flight_are_bounded(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.latency_s = 0.05
    replies = run(_chat(fake_openai.base_url, fast_cfg(max_in_flight=4), n=24))
    assert len(replies) == 24
    assert fake_openai.max_in_flight == 4


def test_backoff_doubles_caps_and_jitters() -> None:
    client_cfg = fast_cfg(backoff_base_s=0.5, backoff_max_s=3.0)

    async def delays() -> list[float]:
        c = LLMClient(LLMEndpoint("http://127.0.0.1:1/v1", "m"), client_cfg)
        try:
            return [c.backoff(i) for i in range(6)]
        finally:
            await c.aclose()

    d = run(delays())
    for i, got in enumerate(d):
        full = min(3.0, 0.5 * 2 ** i)
        assert full / 2 <= got <= full
