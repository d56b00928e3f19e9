"""What the driver does per generation strategy: source samples before, a summary after.

Sources: OSS-Instruct starts from seed snippets (`pipeline.seeds.snippets`); Self-Instruct,
Evol-Instruct and Case2Code start from the seed-task pool (`pipeline.seeds.tasks`), each
with its own round-0 samples that its first stage consumes. After the run,
`strategy_summary` puts per-strategy counts of generated, parsed, novel and verified
samples into stats.json.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import GenerationConfig
from pipeline.output import dedupe
from pipeline.record import Sample
from pipeline.seeds.tasks import SeedTask, task_samples

#: Fields that seed-task source samples carry besides `SOURCE_FIELDS` (see pipeline.run).
TASK_SOURCE_FIELDS = {"instruction", "code", "tests", "round"}
#: The stage (by name) that generates each strategy's samples and counts them.
GENERATOR_STAGE = {"oss_instruct": "oss_instruct", "self_instruct": "self_instruct",
                   "evol_instruct": "evol_instruct", "case2code": "case2code_infer"}


def task_sources(gen: GenerationConfig, tasks: list[SeedTask]) -> list[Sample]:
    """Round-0 samples from the seed-task pool for each enabled strategy that uses it."""
    limits = {"self_instruct": gen.self_instruct.num_seeds, "evol_instruct": gen.evol.num_seeds,
              "case2code": gen.case2code.num_seeds}
    out: list[Sample] = []
    for strategy, limit in limits.items():
        if strategy in gen.strategies:
            out += task_samples(tasks, strategy, limit)
    return out


def strategy_summary(strategies: list[str], stage_stats: dict[str, dict[str, float]],
                     samples: list[Sample]) -> dict[str, dict[str, int]]:
    """Per strategy: generated, parsed, novel (by its generator stage) and verified (kept).

    Stages that count `generated` / `parsed` / `novel` themselves are read from their
    counters. For OSS-Instruct, whose stage does not (and whose `out` also counts the
    other strategies' samples it passes through), they come from the samples: every
    sample of the strategy was generated, those its stage did not reject parsed, and
    there is no novelty filter, so novel = parsed.
    """
    unique = dedupe(samples)
    out: dict[str, dict[str, int]] = {}
    for strategy in strategies:
        stage = GENERATOR_STAGE[strategy]
        st = stage_stats.get(stage, {})
        mine = [s for s in unique if s.strategy == strategy]
        verified = sum(1 for s in mine if not s.rejected)
        if "generated" in st:
            row = {"generated": int(st["generated"]), "parsed": int(st.get("parsed", 0)),
                   "novel": int(st.get("novel", st.get("parsed", 0)))}
        else:
            parsed = sum(1 for s in mine if s.reject_stage != stage)
            row = {"generated": len(mine), "parsed": parsed, "novel": parsed}
        out[strategy] = {**row, "verified": verified}
        solve = stage_stats.get("solve", {})
        if f"generated_{strategy}" in solve:
            out[strategy]["solve_replies"] = int(solve[f"generated_{strategy}"])
            out[strategy]["solve_parsed"] = int(solve.get(f"parsed_{strategy}", 0))
    return out


def dedup_text(sample: Sample) -> str:
    """What run-wide dedup compares for a sample: its instruction, or for Case2Code only
    the example calls and values. Case2Code's prompt text is the same for every task and
    made any two look alike (measured: 6 of 7 verified tasks of a real run dropped, e.g.
    `collapse_whitespace` as a repeat of `caesar_shift`)."""
    if sample.strategy == "case2code":
        from pipeline.stages.case2code import case_examples_text, case_function

        return case_examples_text(sample.instruction, case_function(sample.tests))
    return sample.instruction


def source_counts(samples: list[Sample]) -> dict[str, Any]:
    """Number of source samples per strategy."""
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.strategy] = counts.get(s.strategy, 0) + 1
    return counts
