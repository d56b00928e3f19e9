"""`pipeline run`: seeds -> generation -> execution gate -> dataset, on the configured executor."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig, dump_config
from pipeline.dedup import STAGE as DEDUP_STAGE
from pipeline.dedup import drop_near_duplicates
from pipeline.executor import RunResult
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.output import write_outputs
from pipeline.stage import Stage, check_chain

log = logging.getLogger(__name__)

#: Fields every source sample carries before the first stage.
SOURCE_FIELDS = {"id", "strategy", "seed", "seed_ref", "language"}
#: Requests in flight against the embedded llama.cpp server, which serves one at a time.
EMBEDDED_IN_FLIGHT = 2


def build_stages(cfg: PipelineConfig, endpoint: LLMEndpoint, cache_path: str | None) -> list[Stage]:
    """The stage list for a config: generation strategies, then the execution gate."""
    from pipeline.stages.execute import ExecuteStage
    from pipeline.stages.oss_instruct import OssInstructGenerator

    gen = cfg.generation
    stages: list[Stage] = []
    if "oss_instruct" in gen.strategies:
        stages.append(OssInstructGenerator(
            endpoint, cfg.llm, cache_path,
            samples_per_seed=gen.samples_per_seed, seed=cfg.seed))
    if "self_instruct" in gen.strategies:
        from pipeline.seeds.tasks import load_seed_tasks
        from pipeline.stages.self_instruct import SelfInstructGenerator

        pool = load_seed_tasks(gen.seed_tasks)
        stages.append(SelfInstructGenerator(endpoint, cfg.llm, cache_path, gen.self_instruct,
                                            [t.instruction for t in pool], seed=cfg.seed,
                                            seed_topics=[t.topic for t in pool]))
    if "evol_instruct" in gen.strategies:
        from pipeline.stages.evol_instruct import EvolInstructGenerator

        stages.append(EvolInstructGenerator(endpoint, cfg.llm, cache_path, gen.evol,
                                            seed=cfg.seed))
    if {"self_instruct", "evol_instruct"} & set(gen.strategies):
        from pipeline.stages.solve import SolveStage

        stages.append(SolveStage(endpoint, cfg.llm, cache_path,
                                 n=gen.solutions_per_instruction, seed=cfg.seed))
    stages.append(ExecuteStage(cfg.sandbox))
    if "case2code" in gen.strategies:
        from pipeline.stages.case2code import (
            Case2CodeCasesStage,
            Case2CodeCheckStage,
            Case2CodeInferStage,
        )

        stages += [Case2CodeCasesStage(cfg.sandbox, gen.case2code),
                   Case2CodeInferStage(endpoint, cfg.llm, cache_path, seed=cfg.seed),
                   Case2CodeCheckStage(cfg.sandbox)]
    if cfg.transform.enabled:
        from pipeline.stages.transform import TransformStage, VariantGateStage

        stages += [TransformStage(cfg.transform), VariantGateStage(cfg.sandbox, cfg.transform)]
    return stages


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
    from pipeline.seeds.snippets import load_seeds_with_stats
    from pipeline.seeds.tasks import SeedTask, load_seed_tasks
    from pipeline.stages.self_instruct import final_novelty_pass
    from pipeline.stages.solve import record_pass_counts
    from pipeline.stages.strategies import (
        TASK_SOURCE_FIELDS,
        dedup_text,
        source_counts,
        strategy_summary,
        task_sources,
    )

    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(dump_config(cfg))
    preflight(cfg)
    gen = cfg.generation
    seeds, seed_stats = (load_seeds_with_stats(cfg.seeds, gen.language)
                         if "oss_instruct" in gen.strategies else ([], {}))
    log.info("loaded %d seed snippets", len(seeds))
    provided = set(SOURCE_FIELDS)
    tasks: list[SeedTask] = []
    if set(gen.strategies) - {"oss_instruct"}:
        tasks = load_seed_tasks(gen.seed_tasks)
        seeds += task_sources(gen, tasks)
        provided |= TASK_SOURCE_FIELDS
        log.info("loaded %d seed tasks", len(tasks))
    if "self_instruct" in gen.strategies and gen.self_instruct.topics:
        from pipeline.stages.self_instruct_tasks import load_topics

        load_topics(gen.self_instruct.topics_file)  # a bad file stops the run before the model
    if cfg.llm.backend == "embedded" and cfg.llm.max_in_flight > EMBEDDED_IN_FLIGHT:
        # llama.cpp's server answers one request at a time: more in flight only queue
        # there and time out. Two keep it busy without waste.
        log.info("embedded backend: %d requests in flight instead of %d",
                 EMBEDDED_IN_FLIGHT, cfg.llm.max_in_flight)
        cfg = cfg.model_copy(update={"llm": cfg.llm.model_copy(
            update={"max_in_flight": EMBEDDED_IN_FLIGHT})})
    cache_path = None
    if cfg.llm.cache:
        cache_path = cfg.llm.cache_path or str(out_dir / "llm_cache.sqlite")
    with start_backend(cfg.llm, log_dir=out_dir) as endpoint:
        stages = build_stages(cfg, endpoint, cache_path)
        check_chain(stages, provided)
        result: RunResult = make_executor(cfg).run(stages, seeds)
    extra: dict[str, Any] = {}
    if tasks:
        extra = {"seed_tasks": len(tasks), "sources": source_counts(seeds),
                 "pass_rates": record_pass_counts(result.samples)}
        if "self_instruct" in gen.strategies:
            extra["self_instruct_final_dedup"] = final_novelty_pass(
                result.samples, [t.instruction for t in tasks],
                gen.self_instruct.novelty_threshold)
    if gen.dedup_threshold is not None:
        result.stage_stats[DEDUP_STAGE] = drop_near_duplicates(
            result.samples, gen.dedup_threshold, dedup_text)
    stats = {
        "seeds": len(seeds),
        "seed_snippets": seed_stats,
        "model": endpoint.model,
        "backend": cfg.llm.backend,
        "executor": cfg.ray.executor,
        "stages": result.stage_stats,
        "wall_time_s": round(time.perf_counter() - t0, 1),
        **extra,
    }
    if tasks:
        stats["by_strategy"] = strategy_summary(gen.strategies, result.stage_stats,
                                                result.samples)
    return write_outputs(out_dir, result.samples, stats)
