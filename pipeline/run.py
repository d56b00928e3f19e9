"""`pipeline run`: load the sources, build the stage list, run it, write the outputs.

The stage list is the whole pipeline (see README, "How the pipeline is put together"):

    each strategy's generation stages (Self-Instruct: + its cross-actor novelty step)
    -> decontam_instruction (benchmark leaks, before anything is solved)
    -> solve (instructions of strategies whose record says `solved`)
    -> execute (the sandbox gate) -> pass_counts*
    -> each strategy's post-gate stages (Case2Code: cases, infer, check)
    -> decontam (instruction and verified code, execution against benchmark tests)
    -> dedup_exact* -> dedup* (ROUGE-L on instructions) -> dedup_minhash* (code)
    -> transform -> variant_gate
    -> score (loss, loss alone, IFD) -> select* (per-group cut by select.policy)

(* global steps). Which strategies run, and what each adds, comes from their records
(`pipeline.stages.strategies.STRATEGIES`); nothing is done to the samples outside the list.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig, RayConfig, dump_config, resolved
from pipeline.stage import Stage, check_chain
from pipeline.stages.strategy import BuildContext

log = logging.getLogger(__name__)

#: Fields every source sample carries before the first stage.
SOURCE_FIELDS = {"id", "strategy", "seed", "seed_ref", "language"}


def build_stages(ctx: BuildContext) -> list[Stage]:
    """The stage list for a config (the module docstring shows its shape)."""
    from pipeline.decontam.stage import DecontaminateStage
    from pipeline.dedup import DedupStep
    from pipeline.dedup_code import ExactDedupStep, MinHashDedupStep
    from pipeline.scoring.select import SelectStep
    from pipeline.stages.execute import ExecuteStage
    from pipeline.stages.score import ScoreStage
    from pipeline.stages.solve import PassCountStep, SolveStage
    from pipeline.stages.strategies import dedup_text, enabled
    from pipeline.stages.transform import TransformStage, VariantGateStage

    cfg = ctx.cfg
    chosen = enabled(cfg.generation.strategies)
    solved = frozenset(st.name for st in chosen if st.solved)
    threshold = cfg.generation.dedup_threshold
    dc, dd = cfg.decontam, cfg.dedup
    stages: list[Stage] = [
        *(stage for st in chosen for stage in st.generate(ctx)),
        *([DecontaminateStage(dc, phase="instruction")] if dc.enabled and solved else []),
        *([SolveStage(ctx.endpoint, cfg.llm, ctx.cache_path, strategies=solved,
                      n=cfg.generation.solutions_per_instruction, seed=cfg.seed)]
          if solved else []),
        ExecuteStage(cfg.sandbox),
        *([PassCountStep()] if solved else []),
        *(stage for st in chosen for stage in st.verify(ctx)),
        *([DecontaminateStage(dc, cfg.sandbox, phase="code")] if dc.enabled else []),
        *([ExactDedupStep(dd.against)] if dd.exact else []),
        *([DedupStep(threshold, dedup_text, dd.against)] if threshold is not None else []),
        *([MinHashDedupStep(dd.minhash_threshold, dd.num_perm, dd.against)]
          if dd.minhash_threshold is not None else []),
        *([TransformStage(cfg.transform, seed=cfg.seed),
           VariantGateStage(cfg.sandbox, cfg.transform)] if cfg.transform.enabled else []),
        *([ScoreStage(cfg.select.scorer), SelectStep(cfg.select, cfg.seed)]
          if cfg.select.enabled else []),
    ]
    for stage in stages:
        if stage.pool != "score":  # the scorer's batch size is its own setting
            stage.batch_size = batch_size(stage, cfg)
        if isinstance(stage, DecontaminateStage):
            stage.batch_size = dc.batch_size
    return stages


def batch_size(stage: Stage, cfg: PipelineConfig) -> int:
    """Samples per batch for `stage`, from the `ray` section (both executors use it)."""
    r: RayConfig = cfg.ray
    if stage.pool == "llm":
        return r.llm_waves_per_batch * cfg.llm.max_in_flight
    return r.sandbox_batch_size if stage.pool == "sandbox" else r.cpu_batch_size


def load_sources(ctx: BuildContext) -> tuple[list[Any], set[str]]:
    """Every enabled strategy's source samples and the fields they provide."""
    from pipeline.seeds.tasks import load_seed_tasks
    from pipeline.stages.strategies import enabled

    chosen = enabled(ctx.cfg.generation.strategies)
    if any(st.uses_seed_tasks for st in chosen):
        ctx.tasks = load_seed_tasks(ctx.cfg.generation.seed_tasks)
    sources, provided = [], set(SOURCE_FIELDS)
    for st in chosen:
        mine = st.sources(ctx)
        log.info("%s: %d source samples", st.name, len(mine))
        sources += mine
        provided |= st.source_fields
    return sources, provided


def make_executor(cfg: PipelineConfig) -> Any:
    """The executor named in the config."""
    if cfg.ray.executor == "local":
        from pipeline.executor.local import LocalExecutor

        return LocalExecutor()
    from pipeline.executor.ray_executor import RayExecutor

    return RayExecutor(cfg.ray)


def preflight(cfg: PipelineConfig) -> None:
    """Fail fast, before any model call, on a sandbox that cannot run."""
    from pipeline.sandbox import check_image

    check_image(cfg.sandbox)


def run_pipeline(cfg: PipelineConfig, out_dir: Path) -> dict[str, Any]:
    """Run the whole job into `out_dir`; rerunning with the same `out_dir` resumes.

    Returns the stats written to `out_dir/stats.json`.
    """
    from pipeline.llm.server import start_backend
    from pipeline.output import kept_samples, write_outputs
    from pipeline.stages.strategies import enabled, strategy_summary

    t0 = time.perf_counter()
    cfg = resolved(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(dump_config(cfg))
    preflight(cfg)
    cache_path = (cfg.llm.cache_path or str(out_dir / "llm_cache.sqlite")) \
        if cfg.llm.cache else None
    ctx = BuildContext(cfg=cfg, cache_path=cache_path)
    sources, provided = load_sources(ctx)
    with start_backend(cfg.llm, log_dir=out_dir) as endpoint:
        ctx.endpoint = endpoint
        stages = build_stages(ctx)
        check_chain(stages, provided)
        result = make_executor(cfg).run(stages, sources)
    chosen = enabled(cfg.generation.strategies)
    kept = Counter(s.strategy for s in kept_samples(result.samples))
    stats: dict[str, Any] = {
        "seeds": len(sources),
        "seed_snippets": ctx.stats.get("seed_snippets", {}),
        "model": endpoint.model,
        "backend": cfg.llm.backend,
        "executor": cfg.ray.executor,
        "stage_order": [s.name for s in stages],
        "stages": result.stage_stats,
        "wall_time_s": round(time.perf_counter() - t0, 1),
        "sources": dict(Counter(s.strategy for s in sources)),
        "by_strategy": strategy_summary(chosen, result.stage_stats, kept),
    }
    if ctx.tasks:
        stats["seed_tasks"] = len(ctx.tasks)
    if cfg.select.enabled:
        from pipeline.output import write_candidates
        from pipeline.scoring.factory import scorer_name

        stats["scorer"] = scorer_name(cfg.select.scorer)
        stats["candidates"] = write_candidates(out_dir, result.samples)
    return write_outputs(out_dir, result.samples, stats)
