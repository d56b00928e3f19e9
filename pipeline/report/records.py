"""A bounded, deterministic sample of a run's records for the report's sample browser.

At most `kept` kept and `rejected` rejected rows, spread evenly over groups (kept: the
strategy; rejected: strategy, stage and reason), a group that has fewer rows giving its
share to the others. Within a group the rows with the smallest hash of their id are
taken, so the same output always shows the same records, whatever order it was written
in. Each record carries its lineage (seed_ref, parent, variants made from it), its code,
tests and test output, with long texts cut so the whole sample fits `budget` bytes of JSON.
"""

from __future__ import annotations

import json
import math
from hashlib import blake2b
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.report.columns import RunColumns

#: Characters kept of each long text field at full budget.
LIMITS = {"instruction": 1500, "response": 1200, "code": 3000, "tests": 1500,
          "detail": 1500}
#: Variants listed per record (the count says how many there are).
MAX_CHILDREN = 12
_ROW_COLS = ["id", "strategy", "parent_id", "seed_ref", "round", "kind", "op", "language",
             "instruction", "response", "code", "tests", "execution", "loss", "ifd", "stage",
             "reason", "detail", "contamination", "model"]


_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
#: Ids longer than this (bytes) are hashed one by one in Python; content hashes are 16.
_VECTOR_MAX = 64


def _mix(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser, elementwise (uint64 arithmetic wraps)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def id_hashes(ids: pa.ChunkedArray, batch: int = 1 << 18) -> np.ndarray:
    """A 64-bit hash of every id, computed on the Arrow string buffers (no Python string
    per row): each id's bytes as little-endian 8-byte words, mixed word by word."""
    arr = pc.fill_null(ids, "").combine_chunks().cast(pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset:arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] else np.zeros(1, np.uint8)
    lens = np.diff(offsets)
    out = np.empty(len(arr), np.uint64)
    for start in range(0, len(arr), batch):
        sl = slice(start, start + batch)
        n_bytes = min(int(lens[sl].max(initial=0)), _VECTOR_MAX)
        width = max(8, -(-n_bytes // 8) * 8)
        cols = np.arange(width)
        idx = np.minimum(offsets[:-1][sl][:, None] + cols, len(data) - 1)
        mat = np.where(cols < lens[sl][:, None], data[idx], 0).astype(np.uint8)
        h = _mix(lens[sl].astype(np.uint64) ^ np.uint64(0x9E3779B97F4A7C15))
        for word in np.ascontiguousarray(mat).view("<u8").T:
            h = _mix(h ^ word)
        out[sl] = h
    for i in np.flatnonzero(lens > _VECTOR_MAX):  # rare: hash the whole id
        digest = blake2b(arr[int(i)].as_py().encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little")
    return out


def quotas(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Rows to take per group: an even share of `budget`, what small groups leave over
    going to the larger ones (the first groups get the remainder)."""
    out = np.zeros(len(sizes), np.int64)
    left, todo = budget, [int(i) for i in np.argsort(sizes, kind="stable")]
    while todo and left > 0:
        share = left // len(todo)
        small = [i for i in todo if sizes[i] <= share]
        if not small:
            for n, i in enumerate(sorted(todo)):
                out[i] = share + (1 if n < left - share * len(todo) else 0)
            break
        for i in small:
            out[i] = sizes[i]
            left -= int(sizes[i])
        todo = [i for i in todo if i not in small]
    return out


def _pick(group: np.ndarray, hashes: np.ndarray, budget: int) -> np.ndarray:
    """Positions (into `group`) of the rows taken from each group, in group order."""
    if not len(group) or budget <= 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((np.arange(len(group)), hashes, group))
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(g)])
    rank = np.arange(len(g)) - np.repeat(starts, sizes)
    q = quotas(sizes, budget)
    return order[rank < np.repeat(q, sizes)]


def choose(cols: RunColumns, kept: int = 150, rejected: int = 150) -> list[int]:
    """Positions (in `cols`' order) of the sampled records: kept ones, then rejected."""
    hashes = id_hashes(cols.id)
    nk = cols.n_kept
    strat = cols.strategy.codes.astype(np.int64) + 1
    k = _pick(strat[:nk], hashes[:nk], kept)
    width = (len(cols.stage.values) + 1) * (len(cols.reason.values) + 1)
    group = strat[nk:] * width + (cols.stage.codes[nk:] + 1) * (len(cols.reason.values) + 1) \
        + cols.reason.codes[nk:] + 1
    r = _pick(group, hashes[nk:], rejected) + nk
    # Shown in hash order, so the strategies and reasons come mixed.
    k, r = k[np.argsort(hashes[k], kind="stable")], r[np.argsort(hashes[r], kind="stable")]
    return [int(p) for p in k] + [int(p) for p in r]


def cut(text: str | None, limit: int) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    text = text or ""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [{len(text) - limit} more characters]"


def _fate(cols: RunColumns, p: int) -> str:
    return "kept" if cols.kept[p] else f"{cols.stage.at(p)}/{cols.reason.at(p)}"


def _clean(v: Any) -> Any:
    """NaN and inf as null: JSON.parse accepts neither."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def lineage(cols: RunColumns, positions: list[int]) -> tuple[dict[int, int], dict[int, list[int]]]:
    """For the rows at `positions`: the position of each one's parent (when the parent is
    in the output) and of its variants (rows whose parent it is)."""
    pos = pa.array(positions, pa.int64())
    ids = cols.id.take(pos)
    parents = pc.index_in(cols.parent_id.take(pos), value_set=cols.id.combine_chunks())
    parent_of = {p: int(i) for p, i in zip(positions, parents.to_pylist(), strict=True)
                 if i is not None}
    hit = np.flatnonzero(pc.is_in(cols.parent_id, value_set=ids.combine_chunks())
                         .to_numpy(zero_copy_only=False))
    children: dict[int, list[int]] = {}
    if len(hit):
        which = pc.index_in(cols.parent_id.take(pa.array(hit)), value_set=ids.combine_chunks())
        for c, w in zip(hit.tolist(), which.to_pylist(), strict=True):
            children.setdefault(positions[w], []).append(c)
    return parent_of, children


def sample_records(cols: RunColumns, kept: int = 150, rejected: int = 150,
                   budget: int = 1_200_000) -> list[dict[str, Any]]:
    """The report's records (module docstring), at most `budget` bytes as JSON."""
    positions = choose(cols, kept, rejected)
    if not positions:
        return []
    rows = cols.rows(positions, _ROW_COLS)
    parent_of, children = lineage(cols, positions)
    related = sorted({*parent_of.values(), *(c for cs in children.values()
                                              for c in cs[:MAX_CHILDREN])})
    info = dict(zip(related, cols.rows(related, ["id", "strategy", "kind", "op",
                                                 "instruction"]), strict=True))
    records = []
    for p, row in zip(positions, rows, strict=True):
        par = parent_of.get(p)
        kids = children.get(p, [])
        rec = {**row, "fate": _fate(cols, p), "kept": bool(cols.kept[p]),
               "split": cols.split_at(p),
               "parent": None if par is None else {
                   **info[par], "instruction": cut(info[par]["instruction"], 300),
                   "fate": _fate(cols, par)},
               "children": [{"id": info[c]["id"], "strategy": info[c]["strategy"],
                             "kind": info[c].get("kind"), "op": info[c].get("op"),
                             "fate": _fate(cols, c)} for c in kids[:MAX_CHILDREN]],
               "children_total": len(kids)}
        records.append(_clean(rec))
    return fit(records, budget)


def fit(records: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The records with their long fields cut (LIMITS, shrunk until the JSON fits); when
    even the shortest cut does not fit, fewer records, evenly spread over the list."""
    scale, floor = 1.0, 0.02
    while True:
        out = [{**r, **{k: cut(r.get(k), max(60, int(n * scale))) for k, n in LIMITS.items()}}
               for r in records]
        size = len(json.dumps(out, ensure_ascii=False).encode())
        if size <= budget:
            return out
        if scale > floor:
            scale = max(floor, scale * min(0.8, 0.9 * budget / size))
            continue
        keep = min(len(records) - 1, int(len(records) * budget / size))
        records = [records[int(i)] for i in np.unique(np.linspace(0, len(records) - 1, keep)
                                                      .round().astype(int))] if keep > 0 else []
