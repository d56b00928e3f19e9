"""`pipeline export`: each split of a run's dataset as one JSON Lines or Parquet file.

For tools that do not read `datasets` directories: `OUT/export/<split>.jsonl` holds one
row per line, as `Dataset[i]` gives it (nulls as null, nested columns as objects and
lists); `OUT/export/<split>.parquet` has the dataset's Arrow schema, with the `datasets`
features in its metadata, so `datasets.load_dataset("parquet", data_files=...)` gets the
same features back. Rows are read from the memory-mapped Arrow files a batch at a time and
written as they come (bounded memory), each file to a temp path and moved into place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import datasets

FORMATS = ("jsonl", "parquet")
#: Rows per batch read from the dataset and written out.
BATCH_ROWS = 1024


def export(out_dir: Path, fmt: Literal["jsonl", "parquet"],
           dest: Path | None = None) -> list[Path]:
    """Write every split of `out_dir/dataset` to `dest/<split>.<fmt>` (default `dest`:
    `out_dir/export`, where files of splits the dataset no longer has are removed).
    Returns the files written, in split order."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    ds_dir = out_dir / "dataset"
    if not (ds_dir / "dataset_dict.json").is_file():
        raise FileNotFoundError(f"{ds_dir} is not a run's dataset (no dataset_dict.json): "
                                "give the --output directory of `python -m pipeline run`")
    dd = datasets.load_from_disk(str(ds_dir))
    own = dest is None
    dest = out_dir / "export" if dest is None else dest
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for split, ds in dd.items():
        path = dest / f"{split}.{fmt}"
        tmp = path.with_name(path.name + ".tmp")
        if fmt == "jsonl":
            _write_jsonl(ds, tmp)
        else:
            ds.to_parquet(str(tmp), batch_size=BATCH_ROWS)
        tmp.replace(path)
        written.append(path)
    if own:
        for stale in dest.glob(f"*.{fmt}"):
            if stale not in written:
                stale.unlink()
    return written


def _write_jsonl(ds: datasets.Dataset, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for batch in ds.with_format("arrow").iter(batch_size=BATCH_ROWS):
            for row in batch.to_pylist():
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
