"""Read a run's output for the report: stats.json and a few columns of the datasets.

`OUT/dataset` and `OUT/rejected` are Arrow files written by `datasets.save_to_disk`
(pipeline/output.py); `datasets.load_from_disk` memory-maps them, so selecting a column
touches only that column's buffers. `RunColumns` holds the few columns the summary needs
as Arrow arrays, integer codes and float arrays: a million rows cost tens of megabytes and
no Python object per row. `rows` fetches whole rows, only for the records the report shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

datasets.disable_progress_bars()


def read_stats(out_dir: Path) -> dict[str, Any]:
    """stats.json of a run's output directory (the error names the fix)."""
    path = out_dir / "stats.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {out_dir} is not the output of a finished "
                                "run (`python -m pipeline run --config C.yaml --output DIR`)")
    return json.loads(path.read_text())


@dataclass
class Category:
    """A string column as integer codes into `values` (-1: null or absent)."""

    codes: np.ndarray
    values: list[str]

    @classmethod
    def of(cls, col: pa.ChunkedArray) -> Category:
        enc = pc.dictionary_encode(col).combine_chunks()
        codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False)
        return cls(codes.astype(np.int32), [str(v) for v in enc.dictionary.to_pylist()])

    def mask(self, value: str) -> np.ndarray:
        """Rows whose value is `value`."""
        if value not in self.values:
            return np.zeros(len(self.codes), bool)
        return self.codes == self.values.index(value)

    def at(self, i: int) -> str:
        c = int(self.codes[i])
        return self.values[c] if c >= 0 else ""

    def counts(self, mask: np.ndarray | None = None) -> dict[str, int]:
        """Rows per value (of the rows in `mask`), nulls left out."""
        codes = self.codes if mask is None else self.codes[mask]
        n = np.bincount(codes[codes >= 0], minlength=len(self.values))
        return {v: int(c) for v, c in zip(self.values, n, strict=True) if c}


def _load(path: Path) -> tuple[datasets.Dataset | None, list[tuple[str, int]]]:
    """The dataset at `path`, a DatasetDict's splits joined (zero-copy), and the splits'
    names and sizes in that order."""
    if not path.exists():
        return None, []
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        names = sorted(ds, key=lambda n: (n != "train", n))
        parts = [ds[n] for n in names]
        splits = [(n, p.num_rows) for n, p in zip(names, parts, strict=True)]
        ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0] \
            if parts else None
    else:
        splits = []
    if ds is not None and ds._indices is not None:  # a saved dataset has none
        ds = ds.flatten_indices()
    return ds, splits


def _col(ds: datasets.Dataset | None, name: str, *path: str) -> pa.ChunkedArray:
    """Column `name` (or its struct field `path`) of a memory-mapped dataset; nulls of
    string type where the dataset or the column is missing."""
    if ds is None:
        return pa.chunked_array([], pa.string())
    if name not in ds.column_names:
        return pa.chunked_array([pa.nulls(ds.num_rows, pa.string())])
    col = ds.data.table.column(name)
    for field in path:
        col = pc.struct_field(col, field)
    return col


def _both(a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.ChunkedArray:
    kind = a.type if len(a) else b.type
    return pa.chunked_array([c.cast(kind) for c in (*a.chunks, *b.chunks)], kind)


def _floats(col: pa.ChunkedArray) -> np.ndarray:
    if len(col) == 0:
        return np.zeros(0)
    return pc.fill_null(pc.cast(col, pa.float64()), np.nan).to_numpy(zero_copy_only=False)


def _score(ds: datasets.Dataset | None, mask: np.ndarray, name: str) -> np.ndarray:
    """The `scores` entry `name` of the rows in `mask`, NaN elsewhere."""
    out = np.full(len(mask), np.nan)
    if ds is None or "scores" not in ds.column_names or not mask.any():
        return out
    where = np.flatnonzero(mask)
    lists = ds.data.table.column("scores").take(pa.array(where)).combine_chunks()
    flat = pc.list_flatten(lists)
    parent = pc.list_parent_indices(lists).to_numpy()
    hit = np.asarray(pc.equal(pc.struct_field(flat, "name"), name).to_numpy(
        zero_copy_only=False), dtype=bool)
    out[where[parent[hit]]] = _floats(pa.chunked_array(
        [pc.struct_field(flat, "value").filter(pa.array(hit))]))
    return out


@dataclass
class RunColumns:
    """The summary's columns of one run's rows: kept rows first, then rejected ones."""

    kept: np.ndarray
    id: pa.ChunkedArray
    parent_id: pa.ChunkedArray
    strategy: Category
    kind: Category
    stage: Category
    reason: Category
    status: Category
    loss: np.ndarray
    ifd: np.ndarray
    duration: np.ndarray
    datasets: tuple[datasets.Dataset | None, datasets.Dataset | None]
    #: The dataset's splits (name, rows), in the order the kept rows come.
    splits: list[tuple[str, int]]

    def split_at(self, i: int) -> str | None:
        """The split of the kept row at position `i` (None for a rejected row)."""
        for name, n in self.splits:
            if i < n:
                return name
            i -= n
        return None

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())

    def __len__(self) -> int:
        return len(self.kept)

    def rows(self, positions: list[int], columns: list[str]) -> list[dict[str, Any]]:
        """Whole rows (the `columns` each has) at `positions` of this table's order."""
        kept_ds, rej_ds = self.datasets
        n = self.n_kept
        out: dict[int, dict[str, Any]] = {}
        for ds, base in ((kept_ds, 0), (rej_ds, n)):
            pos = [p - base for p in positions if (p < n) == (base == 0)]
            if ds is None or not pos:
                continue
            table = ds.data.table.select([c for c in columns if c in ds.column_names])
            # One zero-copy slice a row: `take` would first join each column's chunks,
            # reading every row of code there is.
            out.update({p + base: table.slice(p, 1).to_pylist()[0] for p in pos})
        return [out[p] for p in positions]


def read_columns(out_dir: Path) -> RunColumns:
    """The summary's columns of `out_dir/dataset` (split train) and `out_dir/rejected`."""
    (k, splits), (r, _) = _load(out_dir / "dataset"), _load(out_dir / "rejected")
    nk, nr = (ds.num_rows if ds is not None else 0 for ds in (k, r))

    def cat(name: str, *path: str) -> Category:
        return Category.of(_both(_col(k, name, *path), _col(r, name, *path)))

    reason = Category.of(_both(pa.chunked_array([pa.nulls(nk, pa.string())]),
                               _col(r, "reason")))
    dropped = reason.mask("not_selected")[nk:]
    return RunColumns(
        kept=np.concatenate([np.ones(nk, bool), np.zeros(nr, bool)]),
        id=_both(_col(k, "id"), _col(r, "id")),
        parent_id=_both(_col(k, "parent_id"), _col(r, "parent_id")),
        strategy=cat("strategy"), kind=cat("kind"), stage=cat("stage"), reason=reason,
        status=cat("execution", "status"),
        loss=np.concatenate([_floats(_col(k, "loss")), _score(r, dropped, "loss")]),
        ifd=np.concatenate([_floats(_col(k, "ifd")), _score(r, dropped, "ifd")]),
        duration=np.concatenate([_floats(_col(k, "execution", "duration_s")),
                                 _floats(_col(r, "execution", "duration_s"))]),
        datasets=(k, r), splits=splits,
    )
