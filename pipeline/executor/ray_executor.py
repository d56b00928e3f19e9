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
from typing import Any

from pipeline.config import RayConfig
from pipeline.executor import RunResult, merge_counters
from pipeline.record import Sample
from pipeline.stage import FatalStageError, Stage

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
    """Hosts one stage in a Ray actor: setup once, then batches."""

    def __init__(self, stage: Stage, sink: Any) -> None:
        self.stage = stage
        self.sink = sink
        stage.setup()

    def __call__(self, batch: Any) -> dict[str, list[Any]]:
        t0 = time.perf_counter()
        self.stage.counters.clear()
        out = self.stage(_decode(batch))
        delta = dict(self.stage.counters)
        delta["busy_seconds"] = time.perf_counter() - t0
        self.sink.add.remote(self.stage.name, delta)
        return _encode(out)

    def __del__(self) -> None:
        # Ray Data has no close hook for map actors; teardown at exit is best effort.
        with contextlib.suppress(Exception):
            self.stage.teardown()


def _actors_for(stage: Stage, cfg: RayConfig) -> int:
    if stage.pool == "llm":
        return cfg.llm_actors
    if stage.pool == "sandbox":
        return cfg.sandbox_actors
    return 1


class RayExecutor:
    """Runs stages on Ray Data; starts a local Ray instance unless `cfg.address` is set."""

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
        return ray

    def run(self, stages: list[Stage], source: list[Sample]) -> RunResult:
        ray = self._init_ray()
        sink = ray.remote(num_cpus=0)(_StatsSink).remote()
        ds = ray.data.from_items(
            [{"id": s.id, "json": json.dumps(s.to_dict(), ensure_ascii=False)} for s in source],
            override_num_blocks=max(1, min(len(source), 64)),
        )
        for stage in stages:
            ds = ds.map_batches(
                _StageActor,
                fn_constructor_args=(stage, sink),
                batch_size=stage.batch_size,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=_actors_for(stage, self.cfg)),
                num_cpus=stage.num_cpus,
            )
        t0 = time.perf_counter()
        try:
            rows = ds.take_all()
        except Exception as exc:
            fatal = _find_fatal(exc)
            if fatal is not None:
                raise fatal from None
            raise
        log.info("ray data finished in %.1fs", time.perf_counter() - t0)
        samples = [Sample.from_dict(json.loads(r["json"])) for r in rows]
        stats = ray.get(sink.get.remote())
        for st in stats.values():
            st["seconds"] = round(st.pop("busy_seconds", 0.0), 3)
        return RunResult(samples=samples, stage_stats=stats)


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
