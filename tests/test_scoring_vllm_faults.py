"""`VllmBackend`'s errors and request shape against the fake OpenAI server (no vLLM needed,
so these run everywhere; the real-server tests are in test_scoring_vllm.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.llm.server import _free_port
from pipeline.scoring.base import ScoringError
from pipeline.scoring.vllm_backend import VllmBackend
from tests.fake_openai_server import FakeOpenAIServer, Reply

MODEL = "smollm2-135m"


def test_a_dead_server_names_the_url() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(ScoringError, match=rf"cannot reach vLLM at {url}/completions.*start it"):
        VllmBackend(url, MODEL).logprobs([[1, 2, 3]])


def test_constructor_checks_its_settings() -> None:
    b = VllmBackend("http://127.0.0.1:1/v1/", MODEL)
    assert (b.name, b.url, b.max_tokens) == (f"vllm:{MODEL}", "http://127.0.0.1:1/v1/completions",
                                            2048)
    assert VllmBackend("http://h/v1", MODEL, label="x:float32").name == "vllm:x:float32"
    for kw, match in [({"max_tokens": 1}, "at least 2"), ({"max_in_flight": 0}, "at least 1"),
                      ({"timeout_s": 0}, "positive")]:
        with pytest.raises(ScoringError, match=match):
            VllmBackend("http://h/v1", MODEL, **kw)
    with pytest.raises(ScoringError, match="not an http"):
        VllmBackend("127.0.0.1:8000", MODEL)


# --- faults from the fake server --------------------------------------------------------------

def _fake_reply(request: dict[str, Any]) -> Reply:
    """A vLLM-shaped reply: token t gets log-probability -t/1000."""
    entries = [None] + [{str(t): {"logprob": -t / 1000, "rank": 1, "decoded_token": "x"}}
                        for t in request["prompt"][1:]]
    body = {"choices": [{"index": 0, "text": "x", "prompt_logprobs": entries}]}
    return Reply(body=json.dumps(body).encode(), delay_s=0.05)


def test_in_flight_requests_are_bounded_and_the_request_is_vllms() -> None:
    with FakeOpenAIServer(handler=_fake_reply) as srv:
        b = VllmBackend(srv.base_url, "m", max_in_flight=3)
        out = b.logprobs([[1, 10 + i, 20] for i in range(12)])
    assert out == [[-(10 + i) / 1000, -0.02] for i in range(12)]
    assert srv.max_in_flight == 3
    assert srv.requests[0] == {"model": "m", "prompt": [1, 10, 20], "max_tokens": 1,
                               "prompt_logprobs": 0, "temperature": 0}


@pytest.mark.parametrize("reply, match", [
    (Reply.error(500, "engine dead"), r"HTTP 500 for sequence 0 \(3 tokens\): engine dead.*log"),
    (Reply.garbage(), r"unusable reply for sequence 0.*502 bad gateway.*vLLM's extension"),
    (Reply(body=b'{"choices": [{"text": "x"}]}'), r"unusable reply.*'prompt_logprobs'"),
    (Reply(body=b'{"choices": [{"prompt_logprobs": [null, {"7": {"logprob": -1}}]}]}'),
     r"unusable reply.*has 2 entries for 3 tokens"),
], ids=["http-500", "not-json", "no-prompt-logprobs", "too-few-entries"])
def test_server_faults_raise_scoring_error(reply: Reply, match: str) -> None:
    with FakeOpenAIServer(script=[reply]) as srv, pytest.raises(ScoringError, match=match):
        VllmBackend(srv.base_url, "m").logprobs([[1, 2, 3]])


def test_a_hung_server_times_out() -> None:
    hang = FakeOpenAIServer(script=[Reply.hang_forever()])
    with hang as srv, pytest.raises(ScoringError, match=r"no reply .* within timeout_s=0.5"):
        VllmBackend(srv.base_url, "m", timeout_s=0.5).logprobs([[1, 2, 3]])


def test_base_url_without_v1_says_so() -> None:
    with FakeOpenAIServer() as srv, pytest.raises(ScoringError, match=r"HTTP 404.*ending in /v1"):
        VllmBackend(srv.base_url.removesuffix("/v1"), "m").logprobs([[1, 2, 3]])
