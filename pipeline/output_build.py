"""Assemble a run's outputs from a stream of samples in bounded memory.

`write_outputs` (pipeline/output.py) hands every sample that left the last stage to a
`Collector` per output (dataset, rejected, candidates) as it streams them from the
executor's Parquet shards. A collector writes its rows to Parquet parts on disk and keeps,
per row, only three small columns in Arrow arrays: the id, a hash of the row's content and
a tag (the strategy, or stage/reason). `assemble` then sorts those keys, keeps one row per
id (the same content generated twice has the same id; of rows that differ, the smallest
content hash, so the choice does not depend on the order Ray delivered them) and loads the
parts with `datasets` in that order. The driver holds about 40 bytes per row, never a row.

`split_keys` deals the kept rows into `train` and `validation` by a hash of the id alone
(`split_of`), so a row's split depends on nothing else: not the run, the seed, the other
rows or the order they came in. A rebuild, a resume or an `--extend` puts every id where it
was, and raising the share only moves rows from train to validation.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: Rows buffered before a Parquet row group is written.
FLUSH_ROWS = 2048


class Collector:
    """Rows of one output, spilled to Parquet parts as they come, plus their sort keys."""

    def __init__(self, folder: Path, features: datasets.Features) -> None:
        self.folder = folder
        self.features = features
        self.schema = features.arrow_schema
        folder.mkdir(parents=True, exist_ok=True)
        self._rows: list[dict[str, Any]] = []
        self._keys: tuple[list[str], list[bytes], list[str]] = ([], [], [])
        self._chunks: list[pa.Table] = []
        self._writer: pq.ParquetWriter | None = None
        self.path = folder / "part-0.parquet"
        self.count = 0

    def add(self, row: dict[str, Any], tag: str, content: str) -> None:
        self._rows.append(row)
        ids, hashes, tags = self._keys
        ids.append(row["id"])
        hashes.append(hashlib.sha256(content.encode("utf-8")).digest()[:8])
        tags.append(tag)
        if len(self._rows) >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, self.schema)
        self._writer.write_table(table)
        ids, hashes, tags = self._keys
        self._chunks.append(pa.table({"id": pa.array(ids, pa.string()),
                                      "h": pa.array(hashes, pa.binary(8)),
                                      "tag": pa.array(tags, pa.string())}))
        self.count += len(self._rows)
        self._rows = []
        self._keys = ([], [], [])

    def keys(self) -> pa.Table:
        """id, h, tag and the row's position `i`, for every row written."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self._chunks:
            return pa.table({"id": pa.array([], pa.string()), "h": pa.array([], pa.binary(8)),
                             "tag": pa.array([], pa.string()), "i": pa.array([], pa.int64())})
        t = pa.concat_tables(self._chunks)
        self._chunks = [t]
        return t.append_column("i", pa.array(range(t.num_rows), pa.int64()))


def unique_sorted(keys: pa.Table, exclude: pa.Array | None = None) -> pa.Table:
    """One row per id, in id order (the smallest content hash of equal ids), without the
    ids in `exclude`."""
    if keys.num_rows == 0:
        return keys
    t = keys.sort_by([("id", "ascending"), ("h", "ascending")])
    ids = t.column("id")
    first = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))
    mask = pa.concat_arrays([pa.array([True]), pc.fill_null(first, True).combine_chunks()])
    t = t.filter(mask)
    if exclude is not None and len(exclude):
        t = t.filter(pc.invert(pc.is_in(t.column("id"), value_set=exclude)))
    return t


def assemble(col: Collector, keep: pa.Table, cache_dir: Path) -> datasets.Dataset:
    """The collector's rows named by `keep` (from `unique_sorted`), in that order."""
    if keep.num_rows == 0:
        return datasets.Dataset.from_dict({k: [] for k in col.features}, features=col.features)
    ds = datasets.Dataset.from_parquet(str(col.path), features=col.features,
                                       cache_dir=str(cache_dir))
    return ds.select(keep.column("i").to_numpy())


#: Salt of the split hash, so that a row's split is independent of anything else the id's
#: digits pick (tie-breaks, shards). Changing it reshuffles every dataset's splits: don't.
_SPLIT_SALT = b"pipeline/split/v1:"
_SPLIT_BATCH = 65536


def _split_points(ids: list[str]) -> np.ndarray:
    """Each id's point in [0, 1): the top 53 bits of a salted sha256 (exact as a float)."""
    bits = [int.from_bytes(hashlib.sha256(_SPLIT_SALT + i.encode("utf-8")).digest()[:8],
                           "big") >> 11 for i in ids]
    return np.array(bits, dtype=np.float64) / 2.0**53


def split_of(sample_id: str, validation_share: float) -> str:
    """`validation` for ids whose hash point falls below `validation_share`, else `train`."""
    return "validation" if _split_points([sample_id])[0] < validation_share else "train"


def split_keys(keep: pa.Table, validation_share: float) -> dict[str, pa.Table]:
    """`keep` (from `unique_sorted`) dealt into `train` and `validation` by `split_of`, each
    in id order; with a share of 0, `train` alone (no validation split at all)."""
    if validation_share <= 0:
        return {"train": keep}
    mask = np.zeros(keep.num_rows, dtype=bool)
    ids = keep.column("id")
    for start in range(0, keep.num_rows, _SPLIT_BATCH):  # never every id as a str at once
        chunk = ids.slice(start, _SPLIT_BATCH).to_pylist()
        mask[start:start + len(chunk)] = _split_points(chunk) < validation_share
    chosen = pa.array(mask, pa.bool_())
    return {"train": keep.filter(pc.invert(chosen)), "validation": keep.filter(chosen)}


def tag_counts(keep: pa.Table) -> Counter[str]:
    if keep.num_rows == 0:
        return Counter()
    return Counter({str(v["values"]): int(v["counts"])
                    for v in pc.value_counts(keep.column("tag")).to_pylist()})


def save(obj: datasets.Dataset | datasets.DatasetDict, dest: Path) -> None:
    """save_to_disk into a temp path, then move into place (never half a dataset)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # datasets writes zero shards for an empty split and then cannot load it back.
    if isinstance(obj, datasets.DatasetDict):
        shards = {k: 1 for k, v in obj.items() if v.num_rows == 0} or None
        if shards:
            shards = {k: shards.get(k, max(1, v.num_rows // 100_000)) for k, v in obj.items()}
    else:
        shards = 1 if obj.num_rows == 0 else None
    obj.save_to_disk(str(tmp), num_shards=shards)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
