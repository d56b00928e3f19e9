"""A pool of warm runners that executes samples in parallel.

`SandboxPool(cfg)` holds `cfg.workers` runners (containers, or bubblewrap sandboxes for
backend=process), each running one sample at a time; `run_many` spreads samples over them
from as many threads. A runner that dies mid-sample (container killed, crashed, hung past
the host deadline) is replaced, and its sample is retried once on another runner; a second
death makes it `sandbox_error`. If no runner can be started (daemon down, image missing)
the samples get `sandbox_error` and `outage` says why.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pipeline.config import SandboxConfig
from pipeline.languages import LANGUAGES, get_language
from pipeline.sandbox.channel import RunnerChannel, SandboxDied, SandboxUnavailable
from pipeline.sandbox.runner.limits import STARVATION_CAP
from pipeline.sandbox.verdict import public_record, sandbox_error_result
from pipeline.sandbox.verdict_cache import VerdictCache

log = logging.getLogger(__name__)

#: Seconds the host waits beyond the runner's own worst case before declaring it hung.
HOST_GRACE_S = 30.0


def make_backend(cfg: SandboxConfig, pool_id: str) -> Any:
    if cfg.backend == "docker":
        from pipeline.sandbox.docker_backend import DockerBackend

        return DockerBackend(cfg, pool_id)
    from pipeline.sandbox.process_backend import ProcessBackend

    return ProcessBackend(cfg, pool_id)


class SandboxPool:
    """Warm runners reused across samples. Use as a context manager or start()/close()."""

    def __init__(self, cfg: SandboxConfig, size: int | None = None) -> None:
        self.cfg = cfg
        self.size = size or cfg.workers
        self.pool_id = secrets.token_hex(6)
        self.stats: Counter[str] = Counter()
        #: Why runners cannot be started right now (None while they can).
        self.outage: str | None = None
        self._backend: Any = None
        self._idle: queue.Queue[RunnerChannel] = queue.Queue()
        self._live = 0
        self._all: set[RunnerChannel] = set()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._cache: VerdictCache | None = None

    def __enter__(self) -> SandboxPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Connect, check the image and warm up the runners.

        Raises SandboxUnavailable (with the fix in its message) if none can be started.
        """
        self._closed = False
        self._backend = make_backend(self.cfg, self.pool_id)
        try:
            self._backend.connect()
        except SandboxUnavailable as exc:
            self.outage = str(exc)
            self.close()
            raise
        if self.cfg.cache and self.cfg.cache_path:
            self._cache = VerdictCache(self.cfg.cache_path, self._backend.environment())
        self._executor = ThreadPoolExecutor(self.size, thread_name_prefix="sandbox")
        warm = list(self._executor.map(self._try_grow, range(self.size)))
        started = [ch for ch in warm if ch is not None]
        for ch in started:
            self._idle.put(ch)
        if not started:
            outage = self.outage or "no sandbox runner could be started"
            self.close()
            self.outage = outage
            raise SandboxUnavailable(outage)
        log.info("sandbox pool %s: %d runner(s) warm", self.pool_id, len(started))

    def _try_grow(self, _: object = None) -> RunnerChannel | None:
        with self._lock:
            self._live += 1
        try:
            return self._start_reserved()
        except SandboxUnavailable:
            return None

    def _start_reserved(self) -> RunnerChannel:
        """Start a runner for a slot already counted in `_live` (freed again on failure)."""
        try:
            if self._closed:
                raise SandboxUnavailable("the sandbox pool is closed")
            ch = self._backend.start_channel()
        except Exception as exc:
            with self._lock:
                self._live -= 1
            if self._closed:
                raise SandboxUnavailable("the sandbox pool is closed") from None
            self.outage = str(exc) if isinstance(exc, SandboxUnavailable) \
                else f"cannot start a sandbox runner: {exc!r}"
            self._count("start_failures")
            raise SandboxUnavailable(self.outage) from None
        with self._lock:
            closed = self._closed
            if not closed:
                self._all.add(ch)
        if closed:  # close() ran while this runner started: it must not outlive the pool
            ch.shutdown()
            raise SandboxUnavailable("the sandbox pool is closed")
        self.outage = None
        self._count("runners_started")
        return ch

    def _acquire(self) -> RunnerChannel:
        while True:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
            with self._lock:
                grow = self._live < self.size
                if grow:
                    self._live += 1
            if grow:
                return self._start_reserved()
            try:
                return self._idle.get(timeout=0.5)
            except queue.Empty:
                continue

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _discard(self, ch: RunnerChannel) -> None:
        ch.close()
        with self._lock:
            self._live -= 1
            self._all.discard(ch)

    def runners(self) -> list[RunnerChannel]:
        """The live runners, idle or busy (for diagnostics and tests)."""
        with self._lock:
            return [ch for ch in self._all if not ch.dead]

    def request(self, sample_id: Any, code: str, tests: str,
                language: str = "python") -> dict[str, Any]:
        """Run one sample in `language`; returns the runner's result frame (see
        pipeline/sandbox/runner/protocol.py)."""
        # RLIMIT_NPROC only where the runner has a user namespace of its own (process):
        # in Docker the uid is shared by every container and the pids cgroup limits them.
        req = {"op": "run", "id": sample_id, "code": code, "tests": tests,
               "timeout_s": self.cfg.timeout_s, "memory_mb": self.cfg.memory_mb,
               "output_limit": self.cfg.output_limit_bytes, "fsize_mb": self.cfg.tmpfs_mb,
               "nproc": self.cfg.pids_limit if self.cfg.backend == "process" else 0}
        if language != "python":  # Python requests stay as they were
            req["language"] = language
            req["tests"] = get_language(language).sandbox_tests(tests)
        if self._cache is not None:
            hit = self._cache.get(req)
            if hit is not None:
                self._count("cached")
                return hit
            self._cache.started()
        res = self._execute(req, sample_id)
        if self._cache is not None:
            self._cache.put(req, res)
        return res

    def _execute(self, req: dict[str, Any], sample_id: Any) -> dict[str, Any]:
        host_timeout = self.cfg.timeout_s * STARVATION_CAP + HOST_GRACE_S
        last: SandboxDied | None = None
        for _attempt in range(2):
            try:
                ch = self._acquire()
            except SandboxUnavailable as exc:
                return sandbox_error_result(sample_id, str(exc))
            try:
                res = ch.request(req, host_timeout)
            except SandboxDied as exc:
                last = exc
                self._count("runner_deaths")
                log.warning("sandbox runner died on sample %s (%s); replacing it", sample_id,
                            exc)
                self._discard(ch)
                continue
            self._idle.put(ch)
            self._count(f"status_{res.get('status')}")
            return res
        self._count("status_sandbox_error")
        return sandbox_error_result(sample_id, f"the sandbox died twice on this sample: {last}")

    def run_many(self, jobs: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """Run (id, code, tests) or (id, code, tests, language) jobs in parallel; results
        in the order of `jobs`."""
        return list(self.run_iter(jobs))

    def run_iter(self, jobs: Iterable[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
        """Like run_many, streaming: a bounded number of jobs in flight, results in order."""
        if self._executor is None:
            raise RuntimeError("SandboxPool.start() was not called")
        window: deque[Future[dict[str, Any]]] = deque()
        for job in jobs:
            window.append(self._executor.submit(self.request, *job))
            if len(window) >= 4 * self.size:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def close(self) -> None:
        """Stop every runner and remove every container of this pool."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._lock:
            self._closed = True
            chans, self._all, self._live = list(self._all), set(), 0
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break
        for ch in chans:
            ch.shutdown()
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        if self._backend is not None:
            leftovers = self._backend.close()
            if leftovers:
                log.error("sandbox containers still present after close: %s", leftovers)
            self._backend = None


def run_records(cfg: SandboxConfig, records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Run `{"id", "code", "tests"}` records (and "language", default "python"); yield one
    result per record, in order.

    Each result is `{"id", "status", "duration_s", "tests_passed", "tests_total",
    "stdout", "stderr"}` with status from ExecStatus. Raises SandboxUnavailable (message
    with the fix) if the sandbox cannot start, and ValueError for a record without code
    or tests.
    """

    def jobs() -> Iterator[tuple[Any, str, str, str]]:
        for n, rec in enumerate(records, 1):
            if not isinstance(rec, dict) or not isinstance(rec.get("code"), str) \
                    or not isinstance(rec.get("tests"), str):
                raise ValueError(f"record {n}: expected an object with string fields "
                                 f"'code' and 'tests' (and an 'id')")
            language = rec.get("language", "python")
            if language not in LANGUAGES:
                raise ValueError(f"record {n}: 'language' must be one of {', '.join(LANGUAGES)}")
            yield rec.get("id", n), rec["code"], rec["tests"], language

    with SandboxPool(cfg) as pool:
        for res in pool.run_iter(jobs()):
            yield public_record(res)
