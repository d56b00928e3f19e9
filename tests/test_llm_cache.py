"""The sqlite request cache: keying, several processes on one file, only successes stored."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import LLMConfig
from pipeline.llm.cache import RequestCache, request_key
from pipeline.llm.client import LLMClient, LLMRequestError
from pipeline.llm.endpoint import LLMEndpoint
from tests.fake_openai_server import FakeOpenAIServer, Reply

MSGS = [{"role": "user", "content": "hello"}]
BASE: dict[str, Any] = {"model": "m", "messages": MSGS, "temperature": 0.7, "top_p": 0.95,
                        "max_tokens": 64, "seed": 1}


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def test_roundtrip(tmp_path: Path) -> None:
    with RequestCache(tmp_path / "c.sqlite") as c:
        assert c.get("k") is None
        c.put("k", {"text": "héllo", "prompt_tokens": 3})
        assert c.get("k") == {"text": "héllo", "prompt_tokens": 3}
        c.put("k2", {"text": "x"})
        assert c.get_many(["k", "k2", "missing"]).keys() == {"k", "k2"}
        assert len(c) == 2
    with RequestCache(tmp_path / "c.sqlite") as c:  # persisted
        assert c.get("k2") == {"text": "x"}


@pytest.mark.parametrize("change", [
    {"model": "other"},
    {"messages": [{"role": "user", "content": "hello!"}]},
    {"messages": [{"role": "system", "content": "be brief"}, *MSGS]},
    {"temperature": 0.0},
    {"top_p": 0.9},
    {"max_tokens": 65},
    {"seed": 2},
    {"response_format": {"type": "json_object"}},
])
def test_key_changes_with_every_request_field(change: dict[str, Any]) -> None:
    assert request_key({**BASE, **change}) != request_key(BASE)


def test_key_ignores_dict_order() -> None:
    assert request_key(dict(reversed(list(BASE.items())))) == request_key(BASE)


def _writer(path: str, worker: int, n: int) -> None:
    c = RequestCache(path)
    for i in range(n):
        c.put(f"{worker}-{i}", {"text": f"reply {worker} {i}"})
        c.get(f"{1 - worker}-{i}")
    c.close()


def test_several_processes_share_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    RequestCache(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 300)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with RequestCache(path) as c:
        assert len(c) == 600
        assert c.get("1-299") == {"text": "reply 1 299"}


def test_client_caches_only_successes(fake_openai: FakeOpenAIServer, tmp_path: Path) -> None:
    cfg = LLMConfig(max_retries=0, backoff_base_s=0.01)
    fake_openai.script.extend([Reply.error(400, "bad"), Reply.ok("good", prompt_tokens=4)])

    async def go(cache: RequestCache) -> list[Any]:
        client = LLMClient(LLMEndpoint(fake_openai.base_url, "m"), cfg, cache)
        out: list[Any] = []
        try:
            for seed in (1, 2, 2):
                try:
                    out.append(await client.chat(MSGS, request_id=f"s{seed}", seed=seed))
                except LLMRequestError as err:
                    out.append(err)
        finally:
            await client.aclose()
        return out

    with RequestCache(tmp_path / "c.sqlite") as cache:
        bad, good, again = asyncio.run(go(cache))
        assert isinstance(bad, LLMRequestError)
        assert len(cache) == 1
    assert not good.cached and good.text == "good"
    assert again.cached and again.text == "good" and again.prompt_tokens == 4
    assert len(fake_openai.requests) == 2  # the third call never reached the server
