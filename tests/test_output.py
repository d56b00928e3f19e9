"""The output writer: empty splits keep their schema; rows carry scores and lineage."""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from pipeline.output import write_outputs
from pipeline.record import ExecStatus, Execution, RejectReason, Sample


def _sample(instruction: str, **kw) -> Sample:
    s = Sample(strategy="oss_instruct", instruction=instruction, response="r", code="c",
               tests="assert True", **kw)
    s.assign_id()
    return s


def test_nothing_rejected_and_nothing_kept_still_write_loadable_datasets(tmp_path: Path) -> None:
    kept = _sample("a", execution=Execution(ExecStatus.PASSED, 0.1, 1, 1),
                   scores={"pass_count": 2.0})
    stats = write_outputs(tmp_path / "one", [kept], {"seeds": 1})
    train = datasets.load_from_disk(str(tmp_path / "one" / "dataset"))["train"]
    assert train.num_rows == 1 and train[0]["scores"] == [{"name": "pass_count", "value": 2.0}]
    assert datasets.load_from_disk(str(tmp_path / "one" / "rejected")).num_rows == 0
    assert stats["yield"] == 1.0

    dropped = _sample("b").reject("execute", RejectReason.EXEC_FAILED, "boom")
    write_outputs(tmp_path / "two", [dropped], {"seeds": 1})
    empty = datasets.load_from_disk(str(tmp_path / "two" / "dataset"))["train"]
    assert empty.num_rows == 0 and "messages" in empty.column_names
    on_disk = json.loads((tmp_path / "two" / "stats.json").read_text())
    assert on_disk["kept"] == 0 and on_disk["rejected_by_reason"] == {"execute/exec_failed": 1}
