"""The generation strategies, as records (`pipeline.stages.strategy.Strategy`), and their
figures in stats.json.

Adding a strategy: write its module under `pipeline/stages/` ending in a `RECORD`, its
templates under `prompts/`, add the record to `STRATEGIES` and its name to
`generation.strategies` in `pipeline/config.py`. `pipeline.run.build_stages` does the rest.
"""

from __future__ import annotations

from typing import Any

from pipeline.record import Sample
from pipeline.stages import case2code, evol_instruct, oss_instruct, self_instruct
from pipeline.stages.strategy import Strategy

#: Every strategy, in the order their stages run.
STRATEGIES: dict[str, Strategy] = {r.name: r for r in (
    oss_instruct.RECORD, self_instruct.RECORD, evol_instruct.RECORD, case2code.RECORD)}


def enabled(names: list[str]) -> list[Strategy]:
    """The records of `names` (generation.strategies), in the order their stages run."""
    return [st for name, st in STRATEGIES.items() if name in names]


def dedup_text(sample: Sample) -> str:
    """What run-wide dedup compares for a sample: its strategy's `dedup_text`, or the
    instruction for samples no strategy made itself (fix_bug, detect_bug)."""
    st = STRATEGIES.get(sample.strategy)
    return st.dedup_text(sample) if st is not None else sample.instruction


def strategy_summary(strategies: list[Strategy], stage_stats: dict[str, dict[str, Any]],
                     kept: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per strategy: generated, parsed and novel from the counters of the stage that
    counts it (`counted_by`; novel = parsed where that stage has no novelty filter),
    solve replies and parses from the solve stage's per-strategy counters, and verified =
    its rows in the dataset (`kept`)."""
    solve = stage_stats.get("solve", {})
    out: dict[str, dict[str, int]] = {}
    for st in strategies:
        c = stage_stats.get(st.counted_by, {})
        row = {"generated": int(c.get("generated", 0)), "parsed": int(c.get("parsed", 0)),
               "novel": int(c.get("novel", c.get("parsed", 0))),
               "verified": int(kept.get(st.name, 0))}
        if st.solved:
            row["solve_replies"] = int(solve.get(f"generated_{st.name}", 0))
            row["solve_parsed"] = int(solve.get(f"parsed_{st.name}", 0))
        out[st.name] = row
    return out
