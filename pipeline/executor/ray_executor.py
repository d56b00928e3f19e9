"""Map stages onto Ray Data: one actor pool per stage, streaming between them.

This is the only module that imports Ray. Samples travel as one JSON string per row so
Arrow never has to infer a schema for nested, sparsely filled fields. A user scales out
by setting `ray.address`; nothing else changes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from pipeline.config import RayConfig
from pipeline.executor import RunResult, merge_counters
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
    """Collects counters and busy seconds from every stage actor."""

    def __init__(self) -> None:
        self.stats: dict[str, dict[str, float]] = {}

    def add(self, stage: str, counters: dict[str, float]) -> None:
        total = self.stats.setdefault(stage, {})
        merge_counters(total, counters)
        # Progress for whoever watches the run: cumulative counts per stage.
        shown = ", ".join(f"{k}={int(v)}" for k, v in sorted(total.items())
                          if k != "busy_seconds")
        print(f"[progress] {stage}: {shown}", flush=True)

    def get(self) -> dict[str, dict[str, float]]:
        return self.stats


class _StageActor:
    """Hosts one stage in a Ray Data map actor: setup once, then batches."""

    def __init__(self, stage: Stage, sink: Any) -> None:
        self.stage = stage
        self.sink = sink
        self._closed = False
        stage.setup()

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
            with contextlib.suppress(Exception):
                self.stage.teardown()

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
        size = -(-len(out) // _blocks(len(out)))
        for i in range(0, len(out), size):
            yield pa.table(_encode(out[i:i + size]))
        if not out:
            yield pa.table(_encode([]))


def _actors_for(stage: Stage, cfg: RayConfig) -> int:
    if stage.pool == "llm":
        return cfg.llm_actors
    if stage.pool == "sandbox":
        return cfg.sandbox_actors
    return 1


class RayExecutor:
    """Runs stages on Ray Data; starts a local Ray instance unless `cfg.address` is set.

    Per-batch stages become `map_batches` over an actor pool each, streaming into one
    another. A global step cuts the stream: the upstream dataset is executed into the
    object store, its blocks go to one actor (never through the driver) that runs the
    step, and the step's output, split into blocks again, feeds the next stages.
    """

    def __init__(self, cfg: RayConfig) -> None:
        self.cfg = cfg

    def _init_ray(self) -> Any:
        import ray

        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                                  "ignore_reinit_error": True}
            if self.cfg.address:
                kw["address"] = self.cfg.address
            elif self.cfg.num_cpus:
                kw["num_cpus"] = self.cfg.num_cpus
            ray.init(**kw)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        if hasattr(ctx, "_enable_actor_pool_on_exit_hook"):
            ctx._enable_actor_pool_on_exit_hook = True  # stage teardown when a pool retires
        return ray

    def run(self, stages: list[Stage], source: list[Sample]) -> RunResult:
        try:
            return self._run(stages, source)
        except Exception as exc:
            fatal = _find_fatal(exc)
            if fatal is not None:
                raise fatal from None
            raise

    def _run(self, stages: list[Stage], source: list[Sample]) -> RunResult:
        ray = self._init_ray()
        sink = ray.remote(num_cpus=0)(_StatsSink).remote()
        ds = ray.data.from_items(
            [{"id": s.id, "json": json.dumps(s.to_dict(), ensure_ascii=False)} for s in source],
            override_num_blocks=_blocks(len(source)),
        )
        global_stats: dict[str, dict[str, Any]] = {}
        t0 = time.perf_counter()
        for stage in stages:
            if isinstance(stage, GlobalStep):
                ds = self._global(ray, ds, stage, global_stats)
                continue
            ds = ds.map_batches(
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
        rows = ds.take_all()
        log.info("ray data finished in %.1fs", time.perf_counter() - t0)
        samples = [Sample.from_dict(json.loads(r["json"])) for r in rows]
        stats = ray.get(sink.get.remote())
        stats.update(global_stats)
        for st in stats.values():
            st["seconds"] = round(st.pop("busy_seconds", 0.0), 3)
        return RunResult(samples=samples, stage_stats={s.name: stats.get(s.name, {})
                                                       for s in stages})

    def _global(self, ray: Any, ds: Any, stage: GlobalStep,
                stats: dict[str, dict[str, Any]]) -> Any:
        refs = ds.to_arrow_refs()  # runs everything upstream; the blocks stay in the store
        actor = ray.remote(num_cpus=stage.num_cpus)(_GlobalActor).remote()
        try:
            gen = actor.run.options(num_returns="streaming").remote(stage, *refs)
            stats[stage.name] = ray.get(next(gen))
            blocks = list(gen)
            ray.wait(blocks, num_returns=len(blocks))
        finally:
            ray.kill(actor)
        return ray.data.from_arrow_refs(blocks)


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
