"""The local and Ray executors run the same stages to the same result."""

from __future__ import annotations

import pytest

from pipeline.executor.local import LocalExecutor
from pipeline.record import RejectReason, Sample
from pipeline.stage import FatalStageError, GlobalStep, Stage, check_chain


class SplitStage(Stage):
    """Turns each seed into two samples (like a generator)."""

    name = "split"
    inputs = ("seed",)
    outputs = ("instruction",)
    batch_size = 3

    def process_one(self, sample: Sample) -> list[Sample]:
        out = []
        for k in range(2):
            child = Sample(strategy="toy", parent_id=sample.id, seed=sample.seed,
                           instruction=f"{sample.seed}-{k}")
            child.assign_id()
            out.append(child)
        return out


class OddRejectStage(Stage):
    """Rejects instructions ending in 1; crashes on 'boom'."""

    name = "odd"
    inputs = ("instruction",)
    outputs = ()

    def process_one(self, sample: Sample) -> list[Sample]:
        if "boom" in sample.instruction:
            raise RuntimeError("boom")
        if sample.instruction.endswith("1"):
            sample.reject(self.name, RejectReason.EXEC_FAILED, "odd")
        return [sample]


class KeepLowestStep(GlobalStep):
    """A global step: of the live `-0` samples, keeps the 2 lowest instructions; needs all
    of them at once. Other samples are not its own."""

    name = "keep_lowest"
    inputs = ("instruction",)

    def accepts(self, sample: Sample) -> bool:
        return sample.instruction.endswith("-0")

    def process_all(self, samples: list[Sample]) -> list[Sample]:
        import os

        self.report["pid"] = os.getpid()
        for s in sorted(samples, key=lambda s: s.instruction)[2:]:
            s.reject(self.name, RejectReason.FILTERED, "not among the 2 lowest")
        return samples


class FatalStage(Stage):
    name = "fatal"

    def process_one(self, sample: Sample) -> list[Sample]:
        raise FatalStageError("server gone; rerun to resume")


def _seeds(n: int) -> list[Sample]:
    out = []
    for i in range(n):
        s = Sample(strategy="toy", seed=f"s{i}")
        s.assign_id()
        out.append(s)
    return out


def _check(result) -> None:
    ids = {s.instruction: s for s in result.samples}
    assert len(result.samples) == 10
    assert all(not ids[f"s{i}-0"].rejected for i in range(5))
    assert all(ids[f"s{i}-1"].reject_reason is RejectReason.EXEC_FAILED for i in range(5))
    split = result.stage_stats["split"]
    assert (split["received"], split["consumed"], split["created"]) == (5, 5, 10)
    assert split["in"] == split["out"] == 10
    assert result.stage_stats["odd"]["dropped_exec_failed"] == 5
    assert result.stage_stats["odd"]["out"] == 5


def test_local_executor_expands_rejects_and_counts() -> None:
    _check(LocalExecutor().run([SplitStage(), OddRejectStage()], _seeds(5)))


def _check_global(result) -> None:
    """After split -> odd -> keep_lowest: s0-0 and s1-0 kept; the other -0 filtered; the
    -1 samples were rejected by `odd` and passed the global step uncounted."""
    by = {s.instruction: s for s in result.samples}
    assert len(result.samples) == 10
    assert [i for i, s in sorted(by.items()) if not s.rejected] == ["s0-0", "s1-0"]
    assert all(by[f"s{i}-0"].reject_stage == "keep_lowest" for i in range(2, 5))
    st = result.stage_stats["keep_lowest"]
    assert (st["received"], st["in"], st["out"], st["dropped_filtered"]) == (5, 5, 2, 3)
    assert st["created"] == st["consumed"] == 0
    for name, c in result.stage_stats.items():  # the counters add up for every stage
        drops = sum(v for k, v in c.items() if k.startswith("dropped_"))
        assert c["in"] == c["out"] + drops, name
        assert c["in"] == c["received"] - c["consumed"] + c["created"], name


def test_global_step_on_the_local_executor() -> None:
    res = LocalExecutor().run([SplitStage(), OddRejectStage(), KeepLowestStep()], _seeds(5))
    _check_global(res)


def test_a_stage_counts_only_its_own_samples() -> None:
    """Samples a stage does not accept pass through it uncounted, like rejects."""
    seeds = _seeds(2)
    res = LocalExecutor().run([SplitStage(), KeepLowestStep(), OddRejectStage()], seeds)
    assert res.stage_stats["keep_lowest"]["in"] == 2  # the -1 samples are not its own


def test_crashing_sample_is_rejected_not_fatal() -> None:
    s = Sample(strategy="toy", instruction="boom")
    s.assign_id()
    res = LocalExecutor().run([OddRejectStage()], [s])
    assert res.samples[0].reject_reason is RejectReason.STAGE_CRASH
    assert "boom" in res.samples[0].reject_detail


def test_check_chain_names_the_missing_field() -> None:
    with pytest.raises(ValueError, match=r"stage 'odd' reads \['instruction'\]"):
        check_chain([OddRejectStage()], provided={"seed"})
    check_chain([SplitStage(), OddRejectStage()], provided={"seed"})


@pytest.mark.ray
def test_ray_executor_matches_local(ray_session) -> None:
    from pipeline.config import RayConfig
    from pipeline.executor.ray_executor import RayExecutor

    _check(RayExecutor(RayConfig()).run([SplitStage(), OddRejectStage()], _seeds(5)))


@pytest.mark.ray
def test_global_step_on_ray_runs_in_an_actor(ray_session) -> None:
    """The same global step on Ray: one call sees every sample, in an actor, not in the
    driver; the stages after it get the samples back split into blocks."""
    import os

    from pipeline.config import RayConfig
    from pipeline.executor.ray_executor import RayExecutor

    stages = [SplitStage(), OddRejectStage(), KeepLowestStep(), OddRejectStage()]
    res = RayExecutor(RayConfig()).run(stages, _seeds(5))
    _check_global(res)
    assert res.stage_stats["keep_lowest"]["pid"] != os.getpid()


@pytest.mark.ray
def test_ray_executor_surfaces_fatal_error(ray_session) -> None:
    from pipeline.config import RayConfig
    from pipeline.executor.ray_executor import RayExecutor

    with pytest.raises(FatalStageError, match="server gone"):
        RayExecutor(RayConfig()).run([FatalStage()], _seeds(2))
