"""Selection by score (pipeline/scoring/select.py): policies, groups, keep, the record of
the cut. Pure logic on hand-made scores; scoring itself is tested in test_scoring.py."""

from __future__ import annotations

import pytest

from pipeline.config import SelectConfig
from pipeline.executor.local import LocalExecutor
from pipeline.record import RejectReason, Sample
from pipeline.scoring.select import SelectStep


def _s(id_: str, loss: float, ifd: float | None = None, strategy: str = "oss_instruct",
       kind: str | None = None, parent: str | None = None) -> Sample:
    scores = {"loss": loss, "loss_alone": 1.0}
    if ifd is not None:
        scores["ifd"] = ifd
    return Sample(id=id_, strategy=strategy, kind=kind, parent_id=parent, scores=scores,
                  instruction=f"task {id_}", response="r")


def _select(samples: list[Sample], seed: int = 0, **cfg) -> tuple[list[str], SelectStep]:
    step = SelectStep(SelectConfig(**cfg), seed)
    out = LocalExecutor().run([step], samples).samples
    return sorted(s.id for s in out if not s.rejected), step


def test_ifd_drops_ifd_at_least_one_and_keeps_the_highest_below() -> None:
    samples = [_s("a", 1, 0.5), _s("b", 1, 0.9), _s("c", 1, 1.0), _s("d", 1, 1.3),
               _s("e", 1, None), _s("f", 1, 0.7)]
    kept, step = _select(samples, policy="ifd", keep=2, group_by="none")
    assert kept == ["b", "f"]
    why = {s.id: s.reject_detail for s in samples if s.rejected}
    assert "IFD 1.000 >= 1" in why["c"] and "IFD 1.300 >= 1" in why["d"]
    assert "no IFD" in why["e"] and "below the cut of 2" in why["a"]
    assert all(s.reject_reason is RejectReason.NOT_SELECTED for s in samples if s.rejected)
    assert step.counters["dropped_not_selected"] == 4 and step.counters["out"] == 2


def test_max_and_min_loss_with_a_fraction_per_strategy_group() -> None:
    samples = [_s(f"o{i}", i) for i in range(4)] + \
              [_s(f"s{i}", 10 + i, strategy="self_instruct") for i in range(2)]
    kept, step = _select(samples, policy="max_loss", keep=0.5, group_by="strategy")
    assert kept == ["o2", "o3", "s1"]  # ceil(0.5 x 4) = 2 and ceil(0.5 x 2) = 1
    funnel = step.report["funnel"]
    assert funnel["oss_instruct"]["selected"] == 2 and funnel["oss_instruct"]["scored"] == 4
    assert funnel["self_instruct"]["loss_selected"]["mean"] == 11
    for s in samples:
        s.reject_reason = s.reject_stage = None
    kept, _ = _select(samples, policy="min_loss", keep=0.5, group_by="strategy")
    assert kept == ["o0", "o1", "s0"]


def test_parent_groups_keep_the_best_of_each_family_and_do_not_cascade() -> None:
    samples = [_s("p1", 1.0), _s("v1", 3.0, kind="refactor", parent="p1"),
               _s("w1", 2.0, kind="refactor", parent="p1"),
               _s("v2", 9.0, kind="bug", parent="p1"), _s("p2", 5.0),
               _s("v3", 4.0, kind="augment", parent="p2")]
    kept, step = _select(samples, policy="max_loss", keep=1, group_by="parent")
    # A family is an original with its refactorings; the original p1 is dropped and its
    # refactoring v1 stays (no cascade). Bug and repair samples are tasks of their own.
    assert kept == ["p2", "v1", "v2", "v3"]
    ranks = {s.id: s.scores["select_rank"] for s in samples}
    assert ranks == {"v1": 1, "w1": 2, "p1": 3, "v2": 1, "p2": 1, "v3": 1}
    p1 = next(s for s in samples if s.id == "p1")
    assert "group parent=p1: rank 3 of 3" in p1.reject_detail
    funnel = step.report["funnel"]
    assert funnel["families"]["groups"] == 4
    assert funnel["kind=original"]["selected"] == 1 and funnel["kind=refactor"]["selected"] == 1


def test_random_is_seeded_and_band_keeps_the_middle() -> None:
    def fresh() -> list[Sample]:
        return [_s(f"x{i:02d}", float(i)) for i in range(20)]

    a, _ = _select(fresh(), seed=1, policy="random", keep=5, group_by="none")
    b, _ = _select(fresh(), seed=1, policy="random", keep=5, group_by="none")
    c, _ = _select(fresh(), seed=2, policy="random", keep=5, group_by="none")
    assert a == b and a != c and len(a) == 5
    kept, _ = _select(fresh(), policy="band", band=(25, 75), group_by="none")
    assert kept == [f"x{i:02d}" for i in range(5, 15)]


def test_unscored_samples_pass_through_and_bad_keep_is_a_config_error() -> None:
    unscored = Sample(id="u", strategy="oss_instruct")
    kept, step = _select([unscored, _s("a", 1.0)], policy="max_loss", group_by="none")
    assert kept == ["a", "u"] and step.counters["received"] == 1
    with pytest.raises(ValueError, match="fraction must be in"):
        SelectConfig(keep=1.5)
    with pytest.raises(ValueError, match="count must be >= 1"):
        SelectConfig(keep=0)
