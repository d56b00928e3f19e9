"""Selection by score: a global step that ranks scored samples within groups and keeps the
top of each.

Policies (`select.policy`):
- `ifd` (Superfiltering): samples with IFD >= 1, or without an IFD, are not selected; the
  rest rank by IFD, highest first (the instruction helps, and the response is still hard).
- `max_loss` (GenCode): highest loss first. `min_loss`: lowest loss first.
- `random`: a shuffle seeded by the run's seed and the sample ids: the control.
- `band`: samples whose loss percentile within their group lies in `select.band`.

`select.keep` is per group: a fraction when written as a float (`0.5`, `1.0`: ceil(keep x
group size)), a count when written as an integer (`1`, `100`). Groups
(`select.group_by`): `strategy`, `kind` (original, refactor, augment, bug), `parent` (an
original with its refactorings, which keep its instruction and behaviour: GenCode keeps,
per original, the best of them; a repair or bug sample is another task and its own
family), or `none`. A sample not selected is rejected as `not_selected`, keeping its
scores, with its rank and group in the detail and in `scores` (`select_rank`,
`select_group_size`), so a user can see and redo the cut. Variants are ranked on their
own, never dropped because their original was.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import defaultdict
from typing import ClassVar

from pipeline.config import SelectConfig
from pipeline.record import RejectReason, Sample
from pipeline.stage import GlobalStep


def group_of(sample: Sample, group_by: str) -> str:
    if group_by == "strategy":
        return sample.strategy
    if group_by == "kind":
        return sample.kind or "original"
    if group_by == "parent":
        # A family is one task: the original with its refactorings (same instruction and
        # behaviour, GenCode's candidates). Repair (augment) and bug samples are other
        # tasks, each its own family, so a cut by loss cannot trade an original for them.
        if sample.kind == "refactor" and sample.parent_id:
            return sample.parent_id
        return sample.id
    return "all"


def _tiebreak(sample: Sample, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{sample.id}".encode()).hexdigest()


def rank_group(members: list[Sample], cfg: SelectConfig, seed: int
               ) -> tuple[list[Sample], list[tuple[Sample, str]]]:
    """(selected in rank order, [(not selected, why)]) for one group."""
    out: list[tuple[Sample, str]] = []
    pool = list(members)
    if cfg.policy == "ifd":
        out = [(s, f"IFD {s.scores['ifd']:.3f} >= 1" if "ifd" in s.scores else "no IFD")
               for s in members if s.scores.get("ifd", 1.0) >= 1]
        pool = [s for s in members if s.scores.get("ifd", 1.0) < 1]
        pool.sort(key=lambda s: (-s.scores["ifd"], s.id))
    elif cfg.policy == "max_loss":
        pool.sort(key=lambda s: (-s.scores["loss"], s.id))
    elif cfg.policy == "min_loss":
        pool.sort(key=lambda s: (s.scores["loss"], s.id))
    elif cfg.policy == "random":
        pool.sort(key=lambda s: _tiebreak(s, seed))
    else:  # band
        pool.sort(key=lambda s: (s.scores["loss"], s.id))
        lo, hi = cfg.band
        n = len(pool)
        inside, outside = [], []
        for i, s in enumerate(pool):
            pct = 100.0 * (i + 0.5) / n
            s.scores["loss_percentile"] = pct
            (inside if lo <= pct <= hi else outside).append(s)
        out += [(s, f"loss percentile {s.scores['loss_percentile']:.1f} outside the band "
                 f"[{lo:g}, {hi:g}]") for s in outside]
        pool = inside
    # An integer is a count; a float a fraction of the group.
    quota = cfg.keep if isinstance(cfg.keep, int) else math.ceil(round(cfg.keep * len(members), 9))
    return pool[:quota], out + [(s, f"below the cut of {quota}") for s in pool[quota:]]


class SelectStep(GlobalStep):
    """Keep the top of every group by `select.policy` (module docstring)."""

    name: ClassVar[str] = "select"
    inputs: ClassVar[tuple[str, ...]] = ("scores",)
    cascades: ClassVar[bool] = False

    def __init__(self, cfg: SelectConfig, seed: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.seed = seed

    def accepts(self, sample: Sample) -> bool:
        return "loss" in sample.scores

    def process_all(self, samples: list[Sample]) -> list[Sample]:
        groups: dict[str, list[Sample]] = defaultdict(list)
        for s in samples:
            groups[group_of(s, self.cfg.group_by)].append(s)
        funnel: dict[str, dict[str, object]] = {}
        for key in sorted(groups):
            members = groups[key]
            kept, dropped = rank_group(members, self.cfg, self.seed)
            ranked = kept + [s for s, _ in dropped]
            for rank, s in enumerate(ranked, 1):
                s.scores["select_rank"] = float(rank)
                s.scores["select_group_size"] = float(len(members))
            for s, why in dropped:
                s.reject(self.name, RejectReason.NOT_SELECTED,
                         f"{self.cfg.policy} in group {self.cfg.group_by}={key}: rank "
                         f"{int(s.scores['select_rank'])} of {len(members)}, {why}")
            if self.cfg.group_by != "parent":
                funnel[key] = _figures(kept, [s for s, _ in dropped])
        self.report["policy"] = self.cfg.policy
        self.report["group_by"] = self.cfg.group_by
        if self.cfg.group_by == "parent":  # one group per family: summarise by kind
            funnel = {"families": {"groups": len(groups)}}
            for kind in sorted({s.kind or "original" for s in samples}):
                mine = [s for s in samples if (s.kind or "original") == kind]
                funnel[f"kind={kind}"] = _figures([s for s in mine if not s.rejected],
                                                  [s for s in mine if s.rejected])
        funnel["all"] = _figures([s for s in samples if not s.rejected],
                                 [s for s in samples if s.rejected])
        self.report["funnel"] = funnel
        self.report["by_strategy"] = _by_strategy(samples)
        return samples


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    qs = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"mean": round(statistics.fmean(values), 4), "p25": round(qs[0], 4),
            "median": round(qs[1], 4), "p75": round(qs[2], 4)}


def _figures(kept: list[Sample], dropped: list[Sample]) -> dict[str, object]:
    return {"scored": len(kept) + len(dropped), "selected": len(kept),
            "not_selected": len(dropped),
            "loss_selected": _summary([s.scores["loss"] for s in kept]),
            "loss_not_selected": _summary([s.scores["loss"] for s in dropped])}


def _by_strategy(samples: list[Sample]) -> dict[str, dict[str, float]]:
    """Per strategy: scored count and the share with IFD >= 1."""
    out: dict[str, dict[str, float]] = {}
    for strategy in sorted({s.strategy for s in samples}):
        mine = [s for s in samples if s.strategy == strategy and "ifd" in s.scores]
        high = sum(1 for s in mine if s.scores["ifd"] >= 1)
        out[strategy] = {"scored": len(mine),
                         "ifd_ge_1_share": round(high / len(mine), 4) if mine else 0.0}
    return out
