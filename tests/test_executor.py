"""The local and Ray executors run the same stages to the same result."""

from __future__ import annotations

import pytest

from pipeline.executor.local import LocalExecutor
from pipeline.record import RejectReason, Sample
from pipeline.stage import FatalStageError, Stage, check_chain


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
    assert result.stage_stats["split"]["in"] == 5
    assert result.stage_stats["split"]["out"] == 10
    assert result.stage_stats["odd"]["dropped_exec_failed"] == 5
    assert result.stage_stats["odd"]["out"] == 5


def test_local_executor_expands_rejects_and_counts() -> None:
    _check(LocalExecutor().run([SplitStage(), OddRejectStage()], _seeds(5)))


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
def test_ray_executor_surfaces_fatal_error(ray_session) -> None:
    from pipeline.config import RayConfig
    from pipeline.executor.ray_executor import RayExecutor

    with pytest.raises(FatalStageError, match="server gone"):
        RayExecutor(RayConfig()).run([FatalStage()], _seeds(2))
