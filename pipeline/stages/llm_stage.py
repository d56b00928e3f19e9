"""Base class of stages that ask the model something for each sample.

INTERFACE:

    class MyStage(LLMStage):
        name = "my_stage"
        inputs = ("seed",)
        outputs = ("instruction", "response", "code", "tests")

        def accepts(self, sample) -> bool:
            # the live samples this stage asks about; the others pass through uncounted
        def build_messages(self, sample) -> list[dict]:
            # chat messages for this sample
        def request_params(self, sample) -> dict:
            # optional extra request params (e.g. response_format); default {}
        def parse_reply(self, sample, reply: ChatReply) -> list[Sample]:
            # turn the reply into zero or more samples; reject with
            # RejectReason.UNPARSEABLE instead of raising

`LLMStage.__init__(self, endpoint: LLMEndpoint, cfg: LLMConfig, cache_path: str | None,
*, seed: int)`. Its batch size is set by `pipeline.run.build_stages` to
`ray.llm_waves_per_batch` x `llm.max_in_flight`: a batch is sent concurrently and ends
with its slowest request, and several waves per batch keep the pipe full meanwhile
(benchmarks/llm_client.py, 2 s latency: 0.88-0.90 of the ideal rate with one wave per
batch, 0.90-0.95 with four).
`process_batch` sends all requests of a batch concurrently (bounded by
cfg.max_in_flight), records prompt/completion tokens on each sample
(`sample.tokens["<stage>_prompt"]`, `["<stage>_completion"]`) and `sample.model`, turns a
400 into RejectReason.LLM_BAD_REQUEST, exhausted retries into LLM_ERROR or
LLM_UNREACHABLE, and raises FatalStageError after cfg.abort_after_failures consecutive
unreachable requests.

The stage object is pickled to workers before `setup()`, so it holds only plain data until
then; `setup()` starts a persistent event loop (uvloop when installed) in a thread of the
worker and opens the HTTP client and the cache on it; `teardown()` closes them.
`process_batch` hands its batch to that loop and waits, so it works from any thread, also
from several at once (a Ray actor with max_concurrency > 1): concurrent batches share one
connection pool and one `max_in_flight` bound, which hides each batch's slowest request.

Each request carries a `seed` derived from the stage name, the run seed and the sample id,
so a rerun sends identical requests: the cache answers them, and a server that honours
seeds reproduces them.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import threading
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

from pipeline.config import LLMConfig
from pipeline.llm.cache import RequestCache, request_key
from pipeline.llm.client import ChatReply, LLMClient, LLMErrorKind, LLMRequestError
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.record import RejectReason, Sample, content_hash
from pipeline.stage import FatalStageError, Stage

log = logging.getLogger(__name__)

_REJECT_REASON = {
    LLMErrorKind.BAD_REQUEST: RejectReason.LLM_BAD_REQUEST,
    LLMErrorKind.SERVER_ERROR: RejectReason.LLM_ERROR,
    LLMErrorKind.UNREACHABLE: RejectReason.LLM_UNREACHABLE,
}
_RUNTIME_FIELDS = ("_loop", "_thread", "_client", "_cache")
#: HTTP statuses that mean the request can never succeed as configured (key, model).
_CONFIG_STATUS = {401, 403, 404}
_T = TypeVar("_T")


#: Young-generation GC threshold while an LLM stage is set up (CPython's default: 700).
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Make the cyclic GC cheap for a process that sends many requests.

    Every request allocates thousands of objects; with the default threshold the collector
    runs every few requests and each full pass walks every object the imports left behind.
    Freezing those and collecting the young generation less often cut the client's CPU per
    request by a fifth to a third here (benchmarks/llm_client.py). Garbage cycles still get
    collected, just in larger batches.
    """
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 < GC_GEN0_THRESHOLD:
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A fresh event loop: uvloop's when installed (less CPU per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LLMStage(Stage):
    """Sends one chat request per live sample and turns each reply into samples."""

    name: ClassVar[str] = "llm"
    #: Which actor pool the Ray executor puts the stage in (cfg.ray.llm_actors actors).
    pool: ClassVar[str] = "llm"

    def __init__(self, endpoint: LLMEndpoint, cfg: LLMConfig, cache_path: str | None,
                 *, seed: int) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.cfg = cfg
        self.cache_path = cache_path
        self.seed = seed
        self._consecutive_unreachable = 0
        self._consecutive_refused = 0
        # Candidate number of each in-flight request sample, by object identity: copies of
        # one sample are the same record otherwise, and the record has no field for this.
        self._replica: dict[int, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: LLMClient | None = None
        self._cache: RequestCache | None = None

    # -- what subclasses implement ---------------------------------------------------

    def build_messages(self, sample: Sample) -> list[dict[str, Any]]:
        """Chat messages for `sample` (one this stage accepts)."""
        raise NotImplementedError

    def request_params(self, sample: Sample) -> dict[str, Any]:
        """Extra request parameters (e.g. response_format); they override cfg's."""
        return {}

    def parse_reply(self, sample: Sample, reply: ChatReply) -> list[Sample]:
        """Turn the reply into samples; reject with RejectReason.UNPARSEABLE, don't raise."""
        raise NotImplementedError

    def candidates(self, sample: Sample) -> int:
        """Requests to send for `sample` (several candidate replies); default 1."""
        return 1

    def replica(self, sample: Sample) -> int:
        """Which of its sample's candidate requests this copy is (0: the first)."""
        return self._replica.get(id(sample), 0)

    # -- lifecycle -------------------------------------------------------------------

    def setup(self) -> None:
        """Start the event loop thread, open the HTTP client and the cache (in the worker)."""
        if self._loop is not None:
            return
        tune_gc()
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"{self.name}-llm-loop")
        self._thread.start()
        if self.cache_path:
            self._cache = RequestCache(self.cache_path)
        self._client = self._submit(self._open_client())

    async def _open_client(self) -> LLMClient:
        return LLMClient(self.endpoint, self.cfg, self._cache, counters=self.counters)

    def _submit(self, coro: Coroutine[Any, Any, _T]) -> _T:
        assert self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()  # e.g. KeyboardInterrupt in the caller: stop the batch too
            raise

    def teardown(self) -> None:
        """Close the client and the cache, stop the loop thread."""
        if self._loop is None:
            return
        if self._client is not None:
            self._submit(self._client.aclose())
        self._submit(self._loop.shutdown_asyncgens())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop.close()
        if self._cache is not None:
            self._cache.close()
        self._loop = self._thread = self._client = self._cache = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for f in _RUNTIME_FIELDS:
            state[f] = None
        return state

    # -- the work --------------------------------------------------------------------

    def request_seed(self, sample: Sample, messages: list[dict[str, Any]]) -> int:
        """Per-request seed from stage name, run seed and sample id (messages if no id)."""
        ident = sample.id or request_key({"messages": messages})
        digest = hashlib.sha256(f"{self.name}\0{self.seed}\0{ident}".encode()).digest()
        base = int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
        # Candidate k > 0 gets its own seed, so the cache keeps candidates apart and the
        # server samples each anew.
        k = self.replica(sample)
        return base if k == 0 else int(content_hash(base, k), 16) & 0x7FFFFFFF

    def process_batch(self, samples: list[Sample]) -> list[Sample]:
        """Send every sample's requests concurrently (`candidates` each); return the parsed
        and rejected samples."""
        if self._loop is None:
            self.setup()
        copies: list[Sample] = []
        for sample in samples:
            for k in range(self.candidates(sample)):
                copy = sample if k == 0 else replace(sample, tokens=dict(sample.tokens),
                                                     scores=dict(sample.scores))
                self._replica[id(copy)] = k
                copies.append(copy)
        try:
            return self._submit(self._run_batch(copies))
        finally:
            for copy in copies:
                self._replica.pop(id(copy), None)

    async def _run_batch(self, samples: list[Sample]) -> list[Sample]:
        tasks = [asyncio.ensure_future(self._one(s)) for s in samples]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            # FatalStageError (or a cancel): stop every request still waiting or retrying.
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [out for group in results for out in group]

    async def _one(self, sample: Sample) -> list[Sample]:
        assert self._client is not None
        messages = self.build_messages(sample)
        params = {"seed": self.request_seed(sample, messages), **self.request_params(sample)}
        try:
            reply = await self._client.chat(messages, request_id=sample.id, **params)
        except LLMRequestError as err:
            self.ticks += 1
            return [self._on_failure(sample, err)]
        self.ticks += 1
        if not reply.cached:
            self._consecutive_unreachable = self._consecutive_refused = 0
        self._account(sample, reply)
        try:
            out = self.parse_reply(sample, reply)
        except Exception as exc:  # a parser bug must cost one sample, not the batch
            log.exception("%s.parse_reply crashed on sample %s", type(self).__name__, sample.id)
            return [sample.reject(self.name, RejectReason.STAGE_CRASH,
                                  f"parse_reply raised {exc!r}")]
        for s in out:
            if s is not sample:
                self._account(s, reply, overwrite=False)
        return out

    def _account(self, sample: Sample, reply: ChatReply, overwrite: bool = True) -> None:
        """Record the request's tokens and the model on a sample it produced."""
        if overwrite or not sample.model:
            sample.model = self.endpoint.model
        for suffix, n in (("prompt", reply.prompt_tokens), ("completion", reply.completion_tokens)):
            key = f"{self.name}_{suffix}"
            if overwrite or key not in sample.tokens:
                sample.tokens[key] = n

    def _on_failure(self, sample: Sample, err: LLMRequestError) -> Sample:
        if err.status in _CONFIG_STATUS:
            # A wrong model name or key fails every request alike: stop instead of
            # rejecting the whole run one sample at a time.
            self._consecutive_refused += 1
            if self._consecutive_refused >= self.cfg.abort_after_failures:
                raise FatalStageError(
                    f"LLM server at {self.endpoint.base_url} refused {self._consecutive_refused} "
                    f"requests in a row with HTTP {err.status}: {err.detail}. Check llm.model "
                    f"({self.endpoint.model!r}) and the API key in ${self.cfg.api_key_env}.")
        if err.kind is LLMErrorKind.UNREACHABLE:
            self._consecutive_unreachable += 1
            if self._consecutive_unreachable >= self.cfg.abort_after_failures:
                where = f" (cache: {self.cache_path})" if self.cache_path else ""
                raise FatalStageError(
                    f"LLM server at {self.endpoint.base_url} unreachable: "
                    f"{self._consecutive_unreachable} requests in a row failed after "
                    f"{err.attempts} attempt(s) each; last error: {err.detail}. Check that the "
                    "server is up (or llm.base_url), then rerun the same command with the same "
                    f"--output to resume from the cache{where}.")
        return sample.reject(self.name, _REJECT_REASON[err.kind], str(err))
