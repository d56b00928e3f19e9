"""Where seed source files come from: the stdlib, a directory, or a dataset column.

Each source yields `SourceFile`s in a deterministic shuffled order, lazily, so a run that
needs 12 seeds reads a handful of files instead of the whole tree. Paths are relative to
the source root, so seed references are the same on every machine.
"""

from __future__ import annotations

import os
import random
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import SeedsConfig

#: Stdlib directories that hold tests, demos, vendored or generated code, not seeds.
STDLIB_SKIP = frozenset({
    "test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo",
    "ensurepip", "pydoc_data", "encodings", "__phello__", "__pycache__", "venv",
    "tkinter", "msilib", "distutils",
})
#: Directory names never walked in a `directory` source.
DIRECTORY_SKIP = frozenset({
    "site-packages", "dist-packages", "node_modules", "__pycache__", "build", "dist",
    "vendor", "_vendor", "vendored", "third_party", "migrations",
})
#: Data files `datasets.load_dataset` reads by extension, for a local `hf_dataset` path.
_DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet",
                       ".csv": "csv", ".txt": "text"}
#: Files larger than this are skipped: they are data tables or generated, and slow to parse.
MAX_FILE_BYTES = 400_000


@dataclass(frozen=True)
class SourceFile:
    """One source text and its stable reference (a path relative to the source root)."""

    ref: str
    text: str


def iter_source_files(cfg: SeedsConfig) -> Iterator[SourceFile]:
    """Yield the source files of `cfg.source` in an order fixed by `cfg.shuffle_seed`."""
    if cfg.source == "stdlib":
        yield from _iter_tree(Path(sysconfig.get_paths()["stdlib"]), STDLIB_SKIP,
                              cfg.shuffle_seed)
    elif cfg.source == "directory":
        root = Path(cfg.path or "")
        if not root.is_dir():
            raise FileNotFoundError(f"seeds.path {root} is not a directory; point it at a "
                                    "folder of .py files or use seeds.source: stdlib")
        yield from _iter_tree(root, DIRECTORY_SKIP, cfg.shuffle_seed)
    else:
        yield from _iter_dataset(cfg)


def _iter_tree(root: Path, skip: frozenset[str], shuffle_seed: int) -> Iterator[SourceFile]:
    paths: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.startswith(".")]
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            if name.endswith(".py") and not name.startswith("test_"):
                paths.append(os.path.normpath(os.path.join(rel_dir, name)))
    paths.sort()  # os.walk order is filesystem-dependent; sort before shuffling
    random.Random(shuffle_seed).shuffle(paths)
    for rel in paths:
        full = root / rel
        try:
            if full.stat().st_size > MAX_FILE_BYTES:
                continue
            text = full.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        yield SourceFile(ref=Path(rel).as_posix(), text=text)


def load_dataset_split(path: str, split: str) -> Any:
    """Open a dataset split from a local `save_to_disk` folder, a local data file, or the Hub.

    A local folder written by `Dataset.save_to_disk` is opened with `load_from_disk`; a local
    .json/.jsonl/.parquet/.csv file with the matching `load_dataset` builder; anything else
    (a Hub name, or a folder of data files) goes to `load_dataset(path, split=split)`.
    """
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ImportError("seeds.source hf_dataset needs `datasets`: pip install datasets") \
            from exc
    local = Path(path)
    if local.is_dir() and any((local / f).exists() for f in
                              ("dataset_info.json", "state.json", "dataset_dict.json")):
        ds = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise KeyError(f"split {split!r} not in {local}; it has {sorted(ds)}")
            ds = ds[split]
        return ds
    if local.is_file():
        builder = _DATA_FILE_BUILDERS.get(local.suffix.lower())
        if builder is None:
            raise ValueError(f"seeds.path {local}: unsupported data file type "
                             f"{local.suffix!r}; use one of {sorted(_DATA_FILE_BUILDERS)}")
        return datasets.load_dataset(builder, data_files={split: str(local)}, split=split)
    return datasets.load_dataset(path, split=split)


def _iter_dataset(cfg: SeedsConfig) -> Iterator[SourceFile]:
    ds = load_dataset_split(cfg.path or "", cfg.split)
    if cfg.column not in ds.column_names:
        raise KeyError(f"seeds.column {cfg.column!r} not in dataset {cfg.path}; "
                       f"columns: {ds.column_names}")
    order = list(range(len(ds)))
    random.Random(cfg.shuffle_seed).shuffle(order)
    for i in order:
        text = ds[i][cfg.column]
        if isinstance(text, str) and len(text) <= MAX_FILE_BYTES:
            yield SourceFile(ref=f"{cfg.split}/{i}", text=text)
