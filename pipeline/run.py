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

import json
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


#: The stores of finished work in a run's output (LLM replies, verdicts, scores).
STORES = {"llm": "llm_cache.sqlite", "sandbox": "sandbox_cache.sqlite",
          "score": "score_cache.sqlite"}


def with_stores(cfg: PipelineConfig, out_dir: Path) -> PipelineConfig:
    """`cfg` with each unset `cache_path` pointing into `out_dir` (see STORES)."""
    llm, sandbox = cfg.llm, cfg.sandbox
    scorer = cfg.select.scorer
    if llm.cache_path is None:
        llm = llm.model_copy(update={"cache_path": str(out_dir / STORES["llm"])})
    if sandbox.cache_path is None:
        sandbox = sandbox.model_copy(update={"cache_path": str(out_dir / STORES["sandbox"])})
    if scorer.cache_path is None:
        scorer = scorer.model_copy(update={"cache_path": str(out_dir / STORES["score"])})
    select = cfg.select.model_copy(update={"scorer": scorer})
    return cfg.model_copy(update={"llm": llm, "sandbox": sandbox, "select": select})


def make_executor(cfg: PipelineConfig, out_dir: Path | None = None,
                  on_start: Any = None, progress: Any = None) -> Any:
    """The executor named in the config (the Ray one writes its shards under `out_dir`)."""
    if cfg.ray.executor == "local":
        from pipeline.executor.local import LocalExecutor

        return LocalExecutor(progress=progress)
    from pipeline.executor.ray_executor import RayExecutor

    return RayExecutor(cfg.ray, work_dir=out_dir, on_start=on_start, progress=progress)


def preflight(cfg: PipelineConfig) -> None:
    """Fail fast, before any model call, on a sandbox that cannot run."""
    from pipeline.sandbox import check_image

    check_image(cfg.sandbox)


def carry_stores(previous: Path, out_dir: Path) -> list[str]:
    """`--extend PREVIOUS`: copy the stores of finished work that `out_dir` lacks from
    `previous` (sqlite's backup API: a consistent copy, written aside and moved into
    place), so everything the previous build did is served from them. Returns the names
    copied. Nothing is copied into a store that exists: that is a resumed --extend."""
    import sqlite3

    if not (previous / "config.yaml").is_file():
        raise FileNotFoundError(f"--extend {previous}: not the output directory of a run "
                                "(it has no config.yaml)")
    copied = []
    for name in STORES.values():
        src, dest = previous / name, out_dir / name
        if not src.is_file() or dest.exists():
            continue
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.unlink(missing_ok=True)
        with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as a, sqlite3.connect(tmp) as b:
            a.backup(b)
        tmp.replace(dest)
        copied.append(name)
    return copied


def run_pipeline(cfg: PipelineConfig, out_dir: Path,
                 extend: Path | None = None) -> dict[str, Any]:
    """Run the whole job into `out_dir`; rerunning with the same `out_dir` resumes, and
    `extend` (an earlier run's output) reuses everything that run did.

    Returns the stats written to `out_dir/stats.json`.
    """
    from pipeline.card import write_card
    from pipeline.executor.guard import RunGuard
    from pipeline.fingerprint import write_fingerprints
    from pipeline.llm.server import start_backend
    from pipeline.output import write_outputs
    from pipeline.progress import RunProgress
    from pipeline.sources_file import prepare_sources, write_outputs_aside
    from pipeline.stages.strategies import enabled, strategy_summary

    t0 = time.perf_counter()
    cfg = resolved(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    with RunGuard(out_dir / "state") as guard:
        if extend is not None:
            copied = carry_stores(extend, out_dir)
            log.info("--extend %s: stores carried over: %s", extend, ", ".join(copied) or
                     "none (already there)")
        (out_dir / "config.yaml").write_text(dump_config(cfg))
        preflight(cfg)
        cfg = with_stores(cfg, out_dir)
        sources = prepare_sources(cfg, out_dir / "state")  # on disk, not in this process
        for name, n in sources.by_strategy.items():
            log.info("%s: %d source samples", name, n)
        ctx = BuildContext(cfg=cfg, cache_path=cfg.llm.cache_path if cfg.llm.cache else None,
                           tasks=sources.tasks, stats=sources.stats)
        with start_backend(cfg.llm, log_dir=out_dir) as endpoint:
            ctx.endpoint = endpoint
            stages = build_stages(ctx)
            check_chain(stages, sources.provided)
            write_fingerprints(out_dir, stages)
            # The stage that counts a strategy receives its source samples.
            totals = {st.counted_by: sources.by_strategy.get(st.name, 0)
                      for st in enabled(cfg.generation.strategies)}
            with RunProgress([s.name for s in stages], totals) as progress:
                result = make_executor(cfg, out_dir, guard.add_marker,
                                       progress.update).run(stages, sources)
        chosen = enabled(cfg.generation.strategies)
        stats: dict[str, Any] = {
            "seeds": len(sources),
            "seed_snippets": ctx.stats.get("seed_snippets", {}),
            "model": endpoint.model,
            "backend": cfg.llm.backend,
            "executor": cfg.ray.executor,
            "stage_order": [s.name for s in stages],
            "stages": result.stage_stats,
            "sources": sources.by_strategy,
        }
        if extend is not None:
            stats["extends"] = str(extend)
        if ctx.tasks:
            stats["seed_tasks"] = len(ctx.tasks)
        if cfg.select.enabled:
            from pipeline.scoring.factory import scorer_name

            stats["scorer"] = scorer_name(cfg.select.scorer)
        if result.shards:  # assembled in a child: the rows never pass through this process
            stats = write_outputs_aside(out_dir, result.shards, stats, cfg.select.enabled,
                                        cfg.output)
        else:
            stats = write_outputs(out_dir, result.iter_samples(), stats,
                                  candidates=cfg.select.enabled, output=cfg.output)
        kept = Counter(stats["kept_by_strategy"])
        stats.update(by_strategy=strategy_summary(chosen, result.stage_stats, kept),
                     wall_time_s=round(time.perf_counter() - t0, 1))
        tmp = out_dir / "stats.json.tmp"
        tmp.write_text(json.dumps(stats, indent=2) + "\n")
        tmp.replace(out_dir / "stats.json")
        write_card(out_dir, stats, cfg)
        _report(out_dir, aside=bool(result.shards))
        return stats


def _report(out_dir: Path, aside: bool) -> None:
    """OUT/report.html (in a child process when the rows are on disk, not in this one); a
    failure to draw it never fails a run whose dataset is written."""
    from pipeline.report import write_report
    from pipeline.sources_file import write_report_aside

    try:
        log.info("report: %s", (write_report_aside if aside else write_report)(out_dir))
    except Exception as exc:
        log.error("report.html not written (%s: %s); the dataset is complete. Retry with "
                  "`python -m pipeline inspect %s --report`", type(exc).__name__, exc, out_dir)


def dry_run(cfg: PipelineConfig, out_dir: Path, extend: Path | None = None) -> list[str]:
    """What `run` would redo, stage by stage, and why (nothing is started or sent)."""
    from pipeline.fingerprint import FILE, explain, fingerprints
    from pipeline.llm.endpoint import LLMEndpoint
    from pipeline.sources_file import read_ids

    cfg = with_stores(resolved(cfg), out_dir)
    ctx = BuildContext(cfg=cfg, cache_path=cfg.llm.cache_path if cfg.llm.cache else None)
    sources, provided = load_sources(ctx)
    ctx.endpoint = LLMEndpoint(base_url="http://127.0.0.1:0/v1", model=planned_model(cfg))
    stages = build_stages(ctx)
    check_chain(stages, provided)
    base = extend if extend is not None else out_dir
    old_path = base / FILE
    old = json.loads(old_path.read_text()) if old_path.is_file() else None
    lines = [f"dry run: {out_dir}" + (f" extending {extend}" if extend else "") +
             f"; compared with {old_path if old else 'nothing (no earlier run there)'}"]
    lines += explain(old, fingerprints(stages), read_ids(base / "state" / "source_ids.txt"),
                     sorted(s.id for s in sources))
    for kind, name in STORES.items():
        for where in dict.fromkeys([out_dir, base]):
            if (where / name).is_file():
                lines.append(f"store {kind}: {_entries(where / name)} entries in "
                             f"{where / name}")
    return lines


def planned_model(cfg: PipelineConfig) -> str:
    """The model name requests will carry, without starting the backend."""
    llm = cfg.llm
    if llm.model:
        return llm.model
    if llm.backend == "embedded":
        path = llm.embedded.model_path
        return Path(path).stem if path else llm.embedded.model
    return "(the server's model)"


def _entries(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])
