"""`pipeline.export`: every split of a run's dataset as JSON Lines or Parquet, row for row."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from pipeline import export as export_module
from pipeline.config import OutputConfig
from pipeline.export import export
from pipeline.output import write_outputs
from pipeline.record import ExecStatus, Execution, RejectReason, Sample


def _samples(n: int) -> list[Sample]:
    out = []
    for i in range(n):
        s = Sample(strategy=("oss_instruct", "evol_instruct")[i % 2],
                   instruction=f"Écris `f{i}` — tâche {i} | with \"quotes\"\nand lines",
                   response=f"```python\ndef f{i}():\n    return {i}\n```", code=f"def f{i}(): ...",
                   tests=f"assert f{i}() == {i}", round=i % 3, parent_id=f"p{i % 7}",
                   kind="refactor" if i % 5 == 0 else None,
                   execution=Execution(ExecStatus.PASSED, 0.25, 2, 2) if i % 4 else None,
                   scores={"loss": 1.0 / (i + 1), "pass_count": 2.0} if i % 3 else {})
        s.assign_id()
        out.append(s)
    dropped = Sample(strategy="oss_instruct", instruction="no code")
    dropped.assign_id()
    return [*out, dropped.reject("execute", RejectReason.EXEC_FAILED, "boom")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    stats = write_outputs(out, _samples(150), {"seeds": 150},
                          output=OutputConfig(validation_share=0.3))
    assert all(stats["kept_by_split"].values())  # both splits have rows
    return out


def _dataset(out: Path) -> datasets.DatasetDict:
    return datasets.load_from_disk(str(out / "dataset"))


@pytest.mark.parametrize("batch", [1024, 7])  # 7: many batches, and a short last one
def test_jsonl_round_trip_per_split(run_dir: Path, batch: int,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "BATCH_ROWS", batch)
    dd = _dataset(run_dir)
    files = export(run_dir, "jsonl")
    assert files == [run_dir / "export" / f"{s}.jsonl" for s in dd]
    for split, d in dd.items():
        lines = (run_dir / "export" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == d.to_list()
    assert not list((run_dir / "export").glob("*.tmp"))


def test_parquet_round_trip_per_split_with_the_features(run_dir: Path, tmp_path: Path) -> None:
    dd = _dataset(run_dir)
    files = export(run_dir, "parquet", dest=tmp_path / "elsewhere")
    assert files == [tmp_path / "elsewhere" / f"{s}.parquet" for s in dd]
    for (split, d), path in zip(dd.items(), files, strict=True):
        assert pq.read_table(path).to_pylist() == d.to_list()
        back = datasets.load_dataset("parquet", data_files=str(path), split="train",
                                     cache_dir=str(tmp_path / "hf"))
        assert back.features == d.features and back.to_list() == d.to_list(), split


def test_an_empty_split_exports_empty_and_stale_files_go(tmp_path: Path) -> None:
    out = tmp_path / "run"
    write_outputs(out, _samples(10), {}, output=OutputConfig(validation_share=0.5))
    assert [p.name for p in export(out, "jsonl")] == ["train.jsonl", "validation.jsonl"]
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.jsonl").write_text("{}\n")
    # Rebuilt with no validation split, then with a share no id falls below.
    write_outputs(out, _samples(10), {}, output=OutputConfig(validation_share=0))
    assert [p.name for p in export(out, "jsonl")] == ["train.jsonl"]
    assert not (out / "export" / "validation.jsonl").exists()  # not left from before
    write_outputs(out, _samples(10), {}, output=OutputConfig(validation_share=1e-9))
    export(out, "jsonl")
    assert (out / "export" / "validation.jsonl").read_text() == ""
    export(out, "parquet", dest=keep)
    assert pq.read_table(keep / "validation.parquet").num_rows == 0
    assert (keep / "notes.jsonl").exists()  # a folder of the user's own is not cleaned


def test_bad_format_and_not_a_run_say_so(tmp_path: Path, run_dir: Path) -> None:
    with pytest.raises(ValueError, match="export format must be one of jsonl, parquet"):
        export(run_dir, "csv")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="not a run's dataset"):
        export(tmp_path, "jsonl")
