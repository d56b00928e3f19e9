"""Log-probabilities from a running vLLM server, through its OpenAI-compatible completions API.

One request per sequence, ``POST {base_url}/completions`` with the token ids as the prompt::

    {"model": MODEL, "prompt": [id0, id1, ...], "max_tokens": 1,
     "prompt_logprobs": 0, "temperature": 0}

`prompt_logprobs` is vLLM's extension to the OpenAI API. The reply carries, per prompt
position, the log-probability of the prompt token itself (plus the top-k others, none for
k = 0)::

    choices[0]["prompt_logprobs"] == [
        None,                                       # the first token has no context
        {"504": {"logprob": -8.21, "rank": 191, "decoded_token": "The"}},
        ...                                         # one dict per later token, keyed by id
    ]

so ``out[j] = prompt_logprobs[j + 1][str(seq[j + 1])]["logprob"]``. The one generated token
(``max_tokens`` must be at least 1) is ignored. A token-id prompt is used as given: no BOS is
added and nothing is re-tokenised, so the scorer's tokens are the ones scored.

vLLM counts that generated token against its context, so a sequence may have at most
``--max-model-len - 1`` tokens: keep `max_tokens` below the server's ``--max-model-len``.

Requests run concurrently (aiohttp, at most `max_in_flight` at once) in a fresh event loop
per call, so `logprobs` works from any thread that is not already running a loop. Nothing
is retried: an HTTP error, a connection failure, a timeout or a reply without the expected
fields raises ScoringError with the server's message and the likely fix.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from pipeline.scoring.base import LogprobBackend, ScoringError

_START_HINT = ("start it (`llm.backend: vllm` starts one; by hand: `python -m "
               "vllm.entrypoints.openai.api_server --model DIR --port PORT`) or fix base_url")


class VllmBackend(LogprobBackend):
    """Scores token ids with the prompt log-probabilities of a vLLM server at `base_url`.

    `base_url` is the OpenAI root, e.g. ``http://127.0.0.1:8000/v1``; `model` the served model
    name. `name` is ``vllm:<label or model>``: give a `label` that names the weights and dtype
    (e.g. ``smollm2-135m:float32``) when scores from other servers may be mixed with these.
    """

    def __init__(self, base_url: str, model: str, *, max_tokens: int = 2048,
                 max_in_flight: int = 16, timeout_s: float = 600,
                 label: str | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ScoringError(f"vLLM base_url {base_url!r} is not an http(s) URL — give the "
                               "server's OpenAI root, e.g. http://127.0.0.1:8000/v1")
        if max_tokens < 2:
            raise ScoringError(f"max_tokens={max_tokens} leaves nothing to score — it must be "
                               "at least 2 (and below the server's --max-model-len)")
        if max_in_flight < 1:
            raise ScoringError(f"max_in_flight={max_in_flight} must be at least 1")
        if timeout_s <= 0:
            raise ScoringError(f"timeout_s={timeout_s:g} must be positive")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/completions"
        self.model = model
        self.max_tokens = max_tokens
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.name = f"vllm:{label or model}"

    def logprobs(self, seqs: list[list[int]],
                 starts: list[int] | None = None) -> list[list[float]]:
        """See `LogprobBackend.logprobs`; one completions request per sequence, concurrently."""
        for i, seq in enumerate(seqs):
            if not 2 <= len(seq) <= self.max_tokens:
                raise ScoringError(
                    f"sequence {i} has {len(seq)} tokens; {self.name} scores 2 to "
                    f"{self.max_tokens} (max_tokens) — truncate it, or raise max_tokens (below "
                    "the server's --max-model-len)")
        if not seqs:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._score_all(seqs))
        raise ScoringError("VllmBackend.logprobs blocks, and this thread runs an event loop — "
                           "call it from a worker thread: `await asyncio.to_thread("
                           "backend.logprobs, seqs)`")

    def close(self) -> None:
        """Nothing to release: each `logprobs` call opens and closes its own connections."""

    async def _score_all(self, seqs: list[list[int]]) -> list[list[float]]:
        limit = asyncio.Semaphore(self.max_in_flight)
        connector = aiohttp.TCPConnector(limit=self.max_in_flight)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        # trust_env=False: never send a request for 127.0.0.1 through an HTTP(S)_PROXY.
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         trust_env=False) as session:

            async def one(i: int, seq: list[int]) -> list[float]:
                async with limit:
                    return await self._score(session, i, seq)

            tasks = [asyncio.create_task(one(i, s)) for i, s in enumerate(seqs)]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                # The first failure is the error; the other requests are not waited for.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    async def _score(self, session: aiohttp.ClientSession, i: int,
                     seq: list[int]) -> list[float]:
        body = {"model": self.model, "prompt": seq, "max_tokens": 1, "prompt_logprobs": 0,
                "temperature": 0}
        try:
            async with session.post(self.url, json=body) as resp:
                status, raw = resp.status, await resp.read()
        except asyncio.TimeoutError:
            raise ScoringError(f"no reply from vLLM at {self.url} within timeout_s="
                               f"{self.timeout_s:g} (sequence {i}, {len(seq)} tokens) — raise "
                               "timeout_s, or lower max_in_flight if the server is "
                               "overloaded") from None
        except aiohttp.ClientError as exc:
            raise ScoringError(f"cannot reach vLLM at {self.url}: {type(exc).__name__}: {exc} "
                               f"— {_START_HINT}") from None
        if status != 200:
            raise ScoringError(self._http_error(status, raw, i, seq))
        try:
            return _parse(json.loads(raw), seq)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ScoringError(
                f"vLLM at {self.url} sent an unusable reply for sequence {i} ({exc}): "
                f"{raw[:300]!r} — is base_url a vLLM server (prompt_logprobs is vLLM's "
                "extension, other OpenAI servers do not return it)?") from None

    def _http_error(self, status: int, raw: bytes, i: int, seq: list[int]) -> str:
        message = _server_message(raw)
        head = (f"vLLM at {self.url} answered HTTP {status} for sequence {i} "
                f"({len(seq)} tokens): {message}")
        if status == 404 and "model" in message.lower():
            return f"{head} — set the model to a name the server serves (GET {self.base_url}" \
                   "/models lists them)"
        if status == 404:
            return f"{head} — base_url must be the OpenAI root, ending in /v1 " \
                   "(e.g. http://127.0.0.1:8000/v1)"
        if status == 400 and ("context length" in message or "max_tokens" in message):
            return (f"{head} — a request needs one token of room after the prompt: keep "
                    "max_tokens below the server's --max-model-len, or start vLLM with a "
                    "larger --max-model-len")
        if status == 400:
            return f"{head} — the token ids must come from this model's tokenizer"
        return f"{head} — see the vLLM server's log; retry once it is healthy"


def _parse(reply: dict[str, Any], seq: list[int]) -> list[float]:
    """The log-probability of each prompt token after the first, from a completions reply."""
    per_token = reply["choices"][0]["prompt_logprobs"]
    if not isinstance(per_token, list) or len(per_token) != len(seq):
        got = len(per_token) if isinstance(per_token, list) else type(per_token).__name__
        raise ValueError(f"prompt_logprobs has {got} entries for {len(seq)} tokens")
    return [float(per_token[j][str(tok)]["logprob"]) for j, tok in enumerate(seq) if j > 0]


def _server_message(raw: bytes) -> str:
    """vLLM's error text (``{"error": {"message": ...}}``, or FastAPI's ``{"detail": ...}``)."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return raw[:500].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:1000]
        for key in ("message", "detail"):
            if obj.get(key):
                return str(obj[key])[:1000]
    return raw[:500].decode("utf-8", "replace")
