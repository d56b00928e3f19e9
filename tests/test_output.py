"""The output writer: empty splits keep their schema; rows carry scores and lineage; the
validation split is a function of the id alone."""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path

import datasets
import pytest

from pipeline.config import ConfigError, OutputConfig, PipelineConfig, parse_config
from pipeline.output import write_outputs
from pipeline.output_build import split_of
from pipeline.record import ExecStatus, Execution, RejectReason, Sample

#: split_of(id, 0.5) of the first eight of `_ids(2000)`.
PINNED = ["validation", "validation", "validation", "train", "train", "train", "train",
          "validation"]


def _sample(instruction: str, **kw) -> Sample:
    s = Sample(strategy="oss_instruct", instruction=instruction, response="r", code="c",
               tests="assert True", **kw)
    s.assign_id()
    return s


def test_nothing_rejected_and_nothing_kept_still_write_loadable_datasets(tmp_path: Path) -> None:
    kept = _sample("a", execution=Execution(ExecStatus.PASSED, 0.1, 1, 1),
                   scores={"pass_count": 2.0})
    stats = write_outputs(tmp_path / "one", [kept], {"seeds": 1})
    ds = datasets.load_from_disk(str(tmp_path / "one" / "dataset"))
    train = datasets.concatenate_datasets(list(ds.values()))  # train and validation
    assert train.num_rows == 1 and train[0]["scores"] == [{"name": "pass_count", "value": 2.0}]
    assert datasets.load_from_disk(str(tmp_path / "one" / "rejected")).num_rows == 0
    assert stats["yield"] == 1.0

    dropped = _sample("b").reject("execute", RejectReason.EXEC_FAILED, "boom")
    write_outputs(tmp_path / "two", [dropped], {"seeds": 1})
    ds = datasets.load_from_disk(str(tmp_path / "two" / "dataset"))
    empty = datasets.concatenate_datasets(list(ds.values()))  # train and validation
    assert empty.num_rows == 0 and "messages" in empty.column_names
    on_disk = json.loads((tmp_path / "two" / "stats.json").read_text())
    assert on_disk["kept"] == 0 and on_disk["rejected_by_reason"] == {"execute/exec_failed": 1}


# The validation split: dealt by a hash of the id alone (pipeline/output_build.py).

def _ids(n: int, salt: str = "") -> list[str]:
    """Ids shaped like the pipeline's (16 hex digits of a content hash)."""
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest()[:16] for i in range(n)]


def test_split_share_is_respected_on_2000_ids() -> None:
    ids = _ids(2000)
    for share in (0.05, 0.2, 0.5):
        n = sum(split_of(i, share) == "validation" for i in ids)
        sd = math.sqrt(2000 * share * (1 - share))  # as if binomial: 4 sd either side
        assert abs(n - 2000 * share) <= 4 * sd, (share, n)
    assert all(split_of(i, 0.0) == "train" for i in ids)


def test_a_split_is_pinned_and_only_grows_with_the_share() -> None:
    ids = _ids(2000)
    # Pinned: a changed hash or salt would move every published dataset's rows.
    assert [split_of(i, 0.5) for i in ids[:8]] == PINNED
    small = {i for i in ids if split_of(i, 0.05) == "validation"}
    large = {i for i in ids if split_of(i, 0.1) == "validation"}
    assert small < large  # raising the share only moves rows from train to validation


def test_an_ids_split_does_not_depend_on_the_other_ids_or_their_order(tmp_path: Path) -> None:
    out = OutputConfig(validation_share=0.3)
    samples = [_sample(f"task {i}") for i in range(200)]
    where = _splits(write_outputs(tmp_path / "all", samples, {}, output=out), tmp_path / "all")
    assert set(where.values()) == {"train", "validation"}
    rng = random.Random(0)
    part = rng.sample(samples, 60) + [_sample(f"other {i}") for i in range(40)]
    again = _splits(write_outputs(tmp_path / "part", part, {}, output=out), tmp_path / "part")
    assert all(again[s.id] == where[s.id] for s in part if s.id in where)
    assert all(where[i] == split_of(i, 0.3) for i in where)


def _splits(stats: dict, out: Path) -> dict[str, str]:
    ds = datasets.load_from_disk(str(out / "dataset"))
    where = {i: name for name, d in ds.items() for i in d["id"]}
    assert stats["kept"] == len(where) == sum(stats["kept_by_split"].values())
    assert stats["kept_by_split"] == {name: d.num_rows for name, d in ds.items()}
    for name, d in ds.items():
        assert d["id"] == sorted(d["id"])  # id order within each split
        assert sum(stats["kept_by_split_strategy"][name].values()) == d.num_rows
    return where


def test_share_zero_writes_train_only_and_an_empty_validation_split_loads(
        tmp_path: Path) -> None:
    samples = [_sample(f"task {i}") for i in range(20)]
    stats = write_outputs(tmp_path / "zero", samples, {}, output=OutputConfig(
        validation_share=0))
    assert list(datasets.load_from_disk(str(tmp_path / "zero" / "dataset"))) == ["train"]
    assert stats["kept_by_split"] == {"train": 20}
    # A share so small that no id falls below it: the split is there, empty, with columns.
    write_outputs(tmp_path / "tiny", samples, {}, output=OutputConfig(validation_share=1e-9))
    ds = datasets.load_from_disk(str(tmp_path / "tiny" / "dataset"))
    assert ds["validation"].num_rows == 0 and ds["train"].num_rows == 20
    assert ds["validation"].features == ds["train"].features


def test_validation_share_bounds_name_the_field() -> None:
    assert PipelineConfig().output.validation_share == 0.05
    with pytest.raises(ConfigError, match=r"output.validation_share: Input should be less "
                                          r"than 1"):
        parse_config({"output": {"validation_share": 1}})
    with pytest.raises(ConfigError, match=r"output.validation_share: Input should be greater "
                                          r"than or equal to 0"):
        parse_config({"output": {"validation_share": -0.1}})
    with pytest.raises(ConfigError, match=r"output.split: unknown key"):
        parse_config({"output": {"split": 0.1}})
