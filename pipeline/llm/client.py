"""The async LLM client: `openai.AsyncOpenAI` over aiohttp, with an explicit retry policy.

Small and explicit (Ray Data's `HttpRequestUDF`): the openai client's own retries are off,
and this module retries only 429, 408, 5xx, unusable bodies, connection errors and
timeouts, with capped exponential backoff and jitter. Any other 4xx is final. Requests in
flight are bounded by a semaphore, each attempt has a deadline, and after the last retry
the error names the request, the URL, the status and the last error.

Requests go through `AsyncOpenAI.post("/chat/completions", content=<JSON bytes>,
cast_to=httpx.Response)` and the reply JSON is read directly: the SDK's typed
`chat.completions.create` spends about as much CPU transforming the params and building
pydantic response models as the whole HTTP exchange costs (measured here: 1.8 vs 0.9 ms
per request).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import openai

try:  # openai builds on httpx2 from 3.x on, on httpx before
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx  # type: ignore[no-redef]

from pipeline.config import LLMConfig
from pipeline.llm.cache import RequestCache, canonical_json, request_key
from pipeline.llm.endpoint import LLMEndpoint

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_JSON_OPTIONS: Any = {"headers": {"Content-Type": "application/json"}}

if sys.version_info >= (3, 11):
    _deadline = asyncio.timeout
else:  # pragma: no cover
    _deadline = None


class LLMErrorKind(str, Enum):
    """Why a request failed for good."""

    BAD_REQUEST = "bad_request"  # a 4xx other than 408/429: the request itself is wrong
    SERVER_ERROR = "server_error"  # 429/408/5xx or an unusable body until retries ran out
    UNREACHABLE = "unreachable"  # no connection, reset, or no answer before the timeout


class LLMRequestError(Exception):
    """A request that failed for good (after retries where retrying made sense)."""

    def __init__(self, kind: LLMErrorKind, request_id: str, url: str, status: int | None,
                 detail: str, attempts: int) -> None:
        self.kind = kind
        self.request_id = request_id
        self.url = url
        self.status = status
        self.detail = detail
        self.attempts = attempts
        status_txt = f"HTTP {status}" if status is not None else "no HTTP status"
        super().__init__(
            f"LLM request {request_id or '?'} to {url} failed ({kind.value}, {status_txt}) "
            f"after {attempts} attempt(s): {detail}")


@dataclass(frozen=True)
class ChatReply:
    """One completion: text, why it stopped, tokens, and whether it came from the cache."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("cached")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], cached: bool = False) -> ChatReply:
        return cls(text=d["text"], finish_reason=d.get("finish_reason"),
                   prompt_tokens=int(d.get("prompt_tokens", 0)),
                   completion_tokens=int(d.get("completion_tokens", 0)), cached=cached)


class _AttemptFailed(Exception):
    def __init__(self, kind: LLMErrorKind, status: int | None, detail: str,
                 retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.kind, self.status, self.detail, self.retry_after = kind, status, detail, retry_after

    @property
    def retryable(self) -> bool:
        return self.kind is not LLMErrorKind.BAD_REQUEST


def _parse_chat(content: bytes) -> ChatReply:
    data = json.loads(content)
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    return ChatReply(text=choice["message"].get("content") or "",
                     finish_reason=choice.get("finish_reason"),
                     prompt_tokens=int(usage.get("prompt_tokens") or 0),
                     completion_tokens=int(usage.get("completion_tokens") or 0))


def _retry_after(headers: Any) -> float | None:
    try:
        return float(headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


class LLMClient:
    """Chat completions against one endpoint, with retries, a concurrency bound and a cache.

    Create and use it inside one running event loop; `aclose()` it in the same loop.
    `counters` (shared with the caller if given) counts `requests` sent to the server,
    `retries`, `cache_hits`, and the `prompt_tokens`/`completion_tokens` the server
    processed (cache hits cost nothing and are not counted there).
    """

    def __init__(self, endpoint: LLMEndpoint, cfg: LLMConfig,
                 cache: RequestCache | None = None,
                 counters: Counter[str] | None = None) -> None:
        self.endpoint = endpoint
        self.cfg = cfg
        self.cache = cache
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.url = endpoint.base_url.rstrip("/") + "/chat/completions"
        self._sem = asyncio.Semaphore(cfg.max_in_flight)
        http = openai.DefaultAioHttpClient(
            timeout=httpx.Timeout(cfg.timeout_s),
            limits=httpx.Limits(max_connections=cfg.max_in_flight,
                                max_keepalive_connections=cfg.max_in_flight))
        self._openai = openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key,
                                          max_retries=0, timeout=cfg.timeout_s,
                                          http_client=http)

    def build_request(self, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        """The request body: model, messages, sampling params from cfg, then `params`."""
        body: dict[str, Any] = {"model": self.endpoint.model, "messages": messages,
                                "temperature": self.cfg.temperature, "top_p": self.cfg.top_p,
                                "max_tokens": self.cfg.max_tokens}
        body.update(params)
        return body

    async def chat(self, messages: list[dict[str, Any]], *, request_id: str = "",
                   **params: Any) -> ChatReply:
        """Send one chat request (`params` override cfg: seed, response_format, ...)."""
        return await self.send(self.build_request(messages, **params), request_id)

    async def send(self, body: dict[str, Any], request_id: str = "") -> ChatReply:
        """Send a full request body; served from the cache when it holds the same request."""
        # Serialised once: the same bytes are the cache key and the HTTP body (and the SDK
        # skips deep-copying and re-encoding a dict body on every attempt).
        payload = canonical_json(body)
        key = request_key(payload) if self.cache is not None else ""
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.counters["cache_hits"] += 1
                return ChatReply.from_dict(hit, cached=True)
        # The slot is held through retries and their backoff: when the server answers 429
        # or 5xx, new requests wait instead of piling on.
        async with self._sem:
            reply = await self._send_with_retries(payload, request_id)
        if self.cache is not None:
            self.cache.put(key, reply.to_dict())
        return reply

    def backoff(self, retry: int, retry_after: float | None = None) -> float:
        """Delay before retry number `retry` (0-based): base * 2**retry, capped, jittered."""
        delay = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * (2 ** retry))
        delay *= 0.5 + random.random() / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cfg.backoff_max_s))
        return delay

    async def _send_with_retries(self, payload: bytes, request_id: str) -> ChatReply:
        attempts = self.cfg.max_retries + 1
        for attempt in range(attempts):
            try:
                reply = await self._attempt(payload)
            except _AttemptFailed as err:
                if not err.retryable or attempt + 1 >= attempts:
                    raise LLMRequestError(err.kind, request_id, self.url, err.status,
                                          err.detail, attempt + 1) from None
                self.counters["retries"] += 1
                await asyncio.sleep(self.backoff(attempt, err.retry_after))
                continue
            self.counters["prompt_tokens"] += reply.prompt_tokens
            self.counters["completion_tokens"] += reply.completion_tokens
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, payload: bytes) -> ChatReply:
        self.counters["requests"] += 1
        post = self._openai.post("/chat/completions", content=payload, options=_JSON_OPTIONS,
                                 cast_to=httpx.Response)
        try:
            if _deadline is not None:
                async with _deadline(self.cfg.timeout_s):
                    resp = await post
            else:  # pragma: no cover
                resp = await asyncio.wait_for(post, self.cfg.timeout_s)
        except asyncio.TimeoutError:
            raise _AttemptFailed(LLMErrorKind.UNREACHABLE, None,
                                 f"no reply within timeout_s={self.cfg.timeout_s:g}") from None
        except openai.APIConnectionError as err:  # includes APITimeoutError
            raise _AttemptFailed(LLMErrorKind.UNREACHABLE, None,
                                 self._describe_connection_error(err)) from None
        except openai.APIStatusError as err:
            status = err.status_code
            detail = f"{err.message}"[:1000]
            if status in RETRYABLE_STATUS or status >= 500:
                raise _AttemptFailed(LLMErrorKind.SERVER_ERROR, status, detail,
                                     _retry_after(err.response.headers)) from None
            raise _AttemptFailed(LLMErrorKind.BAD_REQUEST, status, detail) from None
        try:
            return _parse_chat(resp.content)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _AttemptFailed(LLMErrorKind.SERVER_ERROR, resp.status_code,
                                 f"unusable response body: {resp.content[:200]!r}") from None

    def _describe_connection_error(self, err: BaseException) -> str:
        # The aiohttp transport maps "connection refused" to a *timeout* exception, so look
        # at the root cause to tell the user what really happened.
        root = err
        for _ in range(16):
            nxt = root.__cause__ or root.__context__
            if nxt is None:
                break
            root = nxt
        name = type(root).__name__
        if isinstance(root, (TimeoutError, asyncio.TimeoutError)) or "Timeout" in name:
            return f"no reply within timeout_s={self.cfg.timeout_s:g} ({name})"
        return f"connection failed: {name}: {root}"

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._openai.close()
