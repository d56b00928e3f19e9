"""Map stages onto Ray Data: one actor pool per stage, streaming between them.

This is the only module that imports Ray. Samples travel as one JSON string per row so
Arrow never has to infer a schema for nested, sparsely filled fields. A user scales out
by setting `ray.address`; nothing else changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.config import RayConfig
from pipeline.executor import RunResult, Samples, merge_counters
from pipeline.executor.watchdog import Heartbeat, RunStalled, StallWatch
from pipeline.progress import StatsFn
from pipeline.record import Sample
from pipeline.stage import FatalStageError, GlobalStep, Stage, stage_stats

log = logging.getLogger(__name__)


def _encode(samples: list[Sample]) -> dict[str, list[Any]]:
    return {"id": [s.id for s in samples],
            "json": [json.dumps(s.to_dict(), ensure_ascii=False) for s in samples]}


def _decode(batch: Any) -> list[Sample]:
    rows = batch["json"]
    return [Sample.from_dict(json.loads(str(r))) for r in rows]


class _StatsSink:
    """Collects counters and busy seconds from every stage actor, and when anything last
    finished (a batch, an answered request: see pipeline/executor/watchdog.py)."""

    def __init__(self) -> None:
        self.stats: dict[str, dict[str, float]] = {}
        self.last = time.time()
        self.actors: list[Any] = []  # every stage actor's handle, to stop a stalled run
        self.started = False

    def add(self, stage: str, counters: dict[str, float]) -> None:
        self.last = time.time()
        total = self.stats.setdefault(stage, {})
        merge_counters(total, counters)

    def beat(self, stage: str) -> None:
        self.last = time.time()

    def ready(self, stage: str) -> None:
        """A stage actor finished its setup."""
        self.started = True
        self.beat(stage)

    def idle_s(self) -> tuple[float, bool]:
        """Seconds since anything last finished, and whether any stage actor is set up."""
        return time.time() - self.last, self.started

    def register(self, actor: list[Any]) -> None:
        self.actors += actor  # in a list, so that Ray passes the handle as it is

    def stage_actors(self) -> list[Any]:
        return self.actors

    def get(self) -> dict[str, dict[str, float]]:
        return self.stats

class _StageActor:
    """Hosts one stage in a Ray Data map actor: setup once, then batches."""

    def __init__(self, stage: Stage, sink: Any) -> None:
        self.stage = stage
        self.sink = sink
        self._closed = False
        import ray

        sink.register.remote([ray.get_runtime_context().current_actor])
        stage.setup()
        sink.ready.remote(stage.name)  # a stage set up is progress too
        self._beat = Heartbeat(lambda: getattr(stage, "ticks", 0),
                               lambda: sink.beat.remote(stage.name))

    def __call__(self, batch: Any) -> dict[str, list[Any]]:
        t0 = time.perf_counter()
        self.stage.counters.clear()
        out = self.stage(_decode(batch))
        delta: dict[str, Any] = dict(self.stage.counters)
        delta["busy_seconds"] = time.perf_counter() - t0
        self.sink.add.remote(self.stage.name, delta)
        return _encode(out)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._beat.stop()
            # A teardown (a sandbox pool removing its containers) is work too: the next
            # stage or global step starts only after it.
            with contextlib.suppress(Exception):
                self.sink.beat.remote(self.stage.name)
            with contextlib.suppress(Exception):
                self.stage.teardown()
            with contextlib.suppress(Exception):
                self.sink.beat.remote(self.stage.name)

    # Ray Data calls one of these when it retires the actor pool: `__ray_shutdown__` in
    # newer releases, `__del__` where DataContext._enable_actor_pool_on_exit_hook is set.
    def __ray_shutdown__(self) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class _GlobalActor:
    """Hosts one global step: all its input blocks in; its stats, then its output split
    into blocks, out (a streaming generator, so the driver only ever holds references)."""

    def run(self, stage: Stage, *tables: Any) -> Iterator[Any]:
        import pyarrow as pa

        t0 = time.perf_counter()
        samples = [s for t in tables for s in _decode(t)]
        stage.setup()
        try:
            out = stage(samples)
        finally:
            stage.teardown()
        stats = stage_stats(stage)
        stats["busy_seconds"] = time.perf_counter() - t0
        yield stats
        if not out:
            yield pa.table(_encode([]))
            return
        size = -(-len(out) // _blocks(len(out)))
        for i in range(0, len(out), size):
            yield pa.table(_encode(out[i:i + size]))


def _actors_for(stage: Stage, cfg: RayConfig) -> int:
    if stage.pool == "llm":
        return cfg.llm_actors
    if stage.pool == "sandbox":
        return cfg.sandbox_actors
    return 1


class ExecutorFailed(FatalStageError):
    """Ray failed under the run (not a stage): the message says where the logs are."""


class RayExecutor:
    """Runs stages on Ray Data; starts a local Ray instance unless `cfg.address` is set.

    Per-batch stages become `map_batches` over an actor pool each, streaming into one
    another. A global step cuts the stream: the upstream dataset is executed into the
    object store, its blocks go to one actor (never through the driver) that runs the
    step, and the step's output, split into blocks again, feeds the next stages. The last
    stage's rows are written by Ray Data to Parquet shards under `work_dir` (a temporary
    directory without one), so the driver never holds the samples.

    A local instance is this run's own (`address="local"`, a temp dir of its own), so a
    second run on the machine never joins it; `on_start(temp_dir)` is called before it
    starts (the run guard marks its processes by that path) and it is shut down at the end.
    """

    def __init__(self, cfg: RayConfig, work_dir: Path | None = None,
                 on_start: Callable[[str], None] | None = None,
                 progress: StatsFn | None = None) -> None:
        self.cfg = cfg
        self.work_dir = work_dir
        self.on_start = on_start
        self.progress = progress
        key = str(work_dir.resolve()) if work_dir else f"pid{os.getpid()}"
        # Short: Ray's unix sockets live under it (a path is at most 107 bytes).
        self.temp_dir = f"/tmp/pipeline-ray-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
        self._owns_ray = False
        self._local = False
        self._watch: StallWatch | None = None

    def _init_ray(self) -> Any:
        import ray

        verbose = log.isEnabledFor(logging.DEBUG)  # `python -m pipeline -v`
        if not verbose:
            _quiet_ray()
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": verbose,
                                  "ignore_reinit_error": True}
            # RAY_ADDRESS: the user (or `ray job submit`, for its entrypoint) points at a
            # cluster; without either, a local instance of this run's own.
            address = self.cfg.address or os.environ.get("RAY_ADDRESS")
            if address:
                kw["address"] = address
            else:
                kw.update(address="local", _temp_dir=self.temp_dir)
                self._local = True
                if self.cfg.num_cpus:
                    kw["num_cpus"] = self.cfg.num_cpus
                if self.on_start is not None:
                    self.on_start(self.temp_dir)
            if not verbose:
                kw["logging_level"] = logging.ERROR  # "started a local instance" and the like
            ray.init(**kw)
            self._owns_ray = True
        if not verbose:
            _quiet_ray()  # ray.init and ray.data set their handlers up again
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        if hasattr(ctx, "print_on_execution_start"):
            ctx.print_on_execution_start = verbose  # the execution-plan dump
        if hasattr(ctx, "_enable_actor_pool_on_exit_hook"):
            ctx._enable_actor_pool_on_exit_hook = True  # stage teardown when a pool retires
        if hasattr(ctx, "execution_no_progress_timeout_s"):
            ctx.execution_no_progress_timeout_s = -1  # our StallWatch decides instead
        if hasattr(ctx, "actor_init_retry_on_errors"):
            ctx.actor_init_retry_on_errors = True  # a transient setup error is retried
        return ray

    def run(self, stages: list[Stage], source: Samples) -> RunResult:
        try:
            return self._run(stages, source)
        except FatalStageError:
            raise
        except Exception as exc:
            fatal = _find_fatal(exc)
            if fatal is not None:
                raise fatal from None
            raise ExecutorFailed(self._describe(exc)) from None
        finally:
            if self._owns_ray:
                import ray

                ray.shutdown()
                self._owns_ray = False

    def _describe(self, exc: BaseException) -> str:
        """One paragraph for the user; the traceback goes to the log file."""
        where = "the log above"
        if self.work_dir is not None:
            path = self.work_dir / "logs" / "executor.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
                f.write("".join(traceback.format_exception(exc)))
            where = str(path)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        ray_logs = (f"{self.temp_dir}/session_latest/logs" if self._local
                    else "the cluster's session logs (/tmp/ray/session_latest/logs on the head)")
        return (f"the Ray executor failed: {type(exc).__name__}: {first}. Traceback: {where}; "
                f"Ray's logs: {ray_logs}.")

    def _run(self, stages: list[Stage], source: Samples) -> RunResult:
        ray = self._init_ray()
        sink = ray.remote(num_cpus=0)(_StatsSink).remote()
        path = getattr(source, "path", None)
        if path is not None:  # a SourceFile: read by Ray, never loaded here
            ds = _read_sources(ray, Path(path))
        else:
            ds = ray.data.from_items(
                [{"id": s.id, "json": json.dumps(s.to_dict(), ensure_ascii=False)}
                 for s in source], override_num_blocks=_blocks(len(source)))
        global_stats: dict[str, dict[str, Any]] = {}
        t0 = time.perf_counter()
        watch = StallWatch(lambda: ray.get(sink.idle_s.remote(), timeout=60),
                           self.cfg.stall_timeout_s)
        shard_dir = self._shard_dir()

        def execute() -> None:
            plan = ds
            for stage in stages:
                if isinstance(stage, GlobalStep):
                    plan = self._global(ray, plan, stage, global_stats, sink)
                    continue
                plan = self._map(ray, plan, stage, sink)
            plan.write_parquet(str(shard_dir))

        def stop() -> None:  # the stalled execution ends when its actors are gone
            for actor in ray.get(sink.stage_actors.remote(), timeout=60):
                with contextlib.suppress(Exception):
                    ray.kill(actor)

        def poll() -> None:  # the driver's view of the run, once a second
            if self.progress is not None:
                with contextlib.suppress(Exception):
                    self.progress(ray.get(sink.get.remote(), timeout=10))

        with watch:
            self._watch = watch
            _wait_for(execute, watch, stop, poll)
        log.info("ray data finished in %.1fs", time.perf_counter() - t0)
        stats = ray.get(sink.get.remote())
        stats.update(global_stats)
        if self.progress is not None:
            self.progress(stats)
        for st in stats.values():
            st["seconds"] = round(st.pop("busy_seconds", 0.0), 3)
        return RunResult(stage_stats={s.name: stats.get(s.name, {}) for s in stages},
                         shards=sorted(shard_dir.glob("*.parquet")))

    def _shard_dir(self) -> Path:
        if self.work_dir is None:
            path = Path(tempfile.mkdtemp(prefix="pipeline-shards-"))
        else:
            path = self.work_dir / "state" / "shards"
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
        return path

    def _map(self, ray: Any, ds: Any, stage: Stage, sink: Any) -> Any:
        return ds.map_batches(
            _StageActor,
            fn_constructor_args=(stage, sink),
            batch_size=stage.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(
                size=_actors_for(stage, self.cfg),
                # An LLM or sandbox batch is long: queue none behind a busy actor
                # while another one is idle (or still starting).
                max_tasks_in_flight_per_actor=1 if stage.pool != "cpu" else None),
            num_cpus=stage.num_cpus,
        )

    def _global(self, ray: Any, ds: Any, stage: GlobalStep,
                stats: dict[str, dict[str, Any]], sink: Any) -> Any:
        refs = ds.to_arrow_refs()  # runs everything upstream; the blocks stay in the store
        actor = ray.remote(num_cpus=stage.num_cpus)(_GlobalActor).remote()
        assert self._watch is not None
        self._watch.paused = True  # one task: nothing to report until it ends
        try:
            gen = actor.run.options(num_returns="streaming").remote(stage, *refs)
            stats[stage.name] = ray.get(next(gen))
            blocks = list(gen)
            ray.wait(blocks, num_returns=len(blocks))
        finally:
            ray.kill(actor)
            ray.get(sink.beat.remote(stage.name))
            self._watch.paused = False
        return ray.data.from_arrow_refs(blocks)


def _quiet_ray() -> None:
    """Keep Ray's own chatter (instance started, execution plans, progress-bar notes, the
    core worker's warnings about actor restarts) out of the user's terminal: it is all in
    Ray's log files, and `-v` shows it here."""
    import ray.data  # noqa: F401  (its import sets its handlers up)

    # Ray's loggers keep their log files; only what they print on the console goes.
    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and \
                    not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.ERROR)
    # The C++ core worker logs to stderr below Python's logging; it reads this at start.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")


def _wait_for(execute: Callable[[], None], watch: StallWatch, stop: Callable[[], None],
              poll: Callable[[], None], poll_s: float = 1.0) -> None:
    """Run `execute` in a thread and wait for it here, calling `poll` every `poll_s`; when
    the watch fires, `stop` it and raise RunStalled."""
    done = threading.Event()
    failed: list[BaseException] = []

    def target() -> None:
        try:
            execute()
        except BaseException as exc:  # handed to the main thread as it is
            failed.append(exc)
        finally:
            done.set()

    threading.Thread(target=target, name="ray-data", daemon=True).start()
    while not done.wait(poll_s):
        poll()
        if watch.fired is not None:
            with contextlib.suppress(Exception):
                stop()
            done.wait(30)  # Ray Data ends the execution on the dead actors
            raise RunStalled(f"the run stalled: {watch.fired}. Look at the LLM server and the "
                             "sandbox; a slower model needs a larger ray.stall_timeout_s.")
    if failed:
        raise failed[0]


def _read_rows(batch: dict[str, Any], path: str) -> Any:
    import pyarrow as pa

    from pipeline.sources_file import read_row_groups

    return pa.concat_tables([read_row_groups(Path(path), int(lo), int(hi))
                             for lo, hi in zip(batch["lo"], batch["hi"], strict=True)])


def _read_sources(ray: Any, path: Path) -> Any:
    """One block per range of the file's row groups (never the whole file in one block, so
    every actor of a pool gets work). The reads take no CPU: the stage actors may hold all
    of them, and a read that waits for one would wait forever."""
    from pipeline.sources_file import row_group_ranges

    ranges = row_group_ranges(path)
    return ray.data.from_items([{"lo": lo, "hi": hi} for lo, hi in ranges],
                               override_num_blocks=len(ranges)).map_batches(
        _read_rows, fn_kwargs={"path": str(path)}, batch_size=1, batch_format="numpy",
        num_cpus=0)


def _blocks(rows: int) -> int:
    """Blocks to split `rows` samples into, so that every actor of a pool gets work."""
    return max(1, min(rows, 64))


def _find_fatal(exc: BaseException) -> FatalStageError | None:
    """Dig a FatalStageError out of Ray's wrapped task errors, if there is one."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, FatalStageError):
            return e
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            stack.append(cause)
        stack += [e.__cause__, e.__context__]
        if "FatalStageError" in str(e):
            msg = str(e).split("FatalStageError:", 1)[-1].strip().splitlines()
            return FatalStageError(msg[0] if msg else str(e))
    return None
