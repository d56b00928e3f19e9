"""Where seed source files come from: the stdlib, a directory, a git commit, or a dataset.

Each source yields `SourceFile`s in a deterministic shuffled order, lazily, so a run that
needs 12 seeds reads a handful of files instead of the whole tree. Paths are relative to
the source root, so seed references are the same on every machine; a git source prefixes
them with the commit (`<sha-12>:path/to/file.py`) and reads only tracked files.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import SeedsConfig
from pipeline.languages import get_language

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
#: `user@host:path`, git's scp-like URL form (a local path never has `@` before a `:`).
_SCP_URL = re.compile(r"^[\w.-]+@[\w.-]+:")


@dataclass(frozen=True)
class SourceFile:
    """One source text and its stable reference (a path relative to the source root)."""

    ref: str
    text: str


def iter_source_files(cfg: SeedsConfig, language: str = "python") -> Iterator[SourceFile]:
    """Yield the source files of `cfg.source` in an order fixed by `cfg.order_seed`
    (directory and git sources: the files with the suffixes of `language`)."""
    suffixes = get_language(language).suffixes
    if cfg.source == "stdlib":
        yield from _iter_tree(Path(sysconfig.get_paths()["stdlib"]), STDLIB_SKIP,
                              cfg.order_seed, suffixes)
    elif cfg.source == "directory":
        root = Path(cfg.path or "")
        if not root.is_dir():
            raise FileNotFoundError(f"seeds.path {root} is not a directory; point it at a "
                                    "folder of .py files or use seeds.source: stdlib")
        yield from _iter_tree(root, DIRECTORY_SKIP, cfg.order_seed, suffixes)
    elif cfg.source == "git":
        yield from _iter_git(cfg, suffixes)
    else:
        yield from _iter_dataset(cfg)


def _wanted_file(name: str, suffixes: tuple[str, ...] = (".py",)) -> bool:
    return name.endswith(suffixes) and not name.startswith("test_")


def _iter_tree(root: Path, skip: frozenset[str], shuffle_seed: int,
               suffixes: tuple[str, ...] = (".py",)) -> Iterator[SourceFile]:
    paths: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.startswith(".")]
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            if _wanted_file(name, suffixes):
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


def _git(*args: str, cwd: str | Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run git without prompts (a URL needing a password fails instead of hanging)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, env=env, check=False)


def _stderr(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The last line git wrote to stderr (its error), or the exit status."""
    lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def is_git_url(path: str) -> bool:
    """True for what `git clone` takes as a remote URL (`scheme://...` or `user@host:path`)."""
    return "://" in path or bool(_SCP_URL.match(path))


def repo_cache_dir(url: str) -> Path:
    """Where a cloned `url` lives: one bare repository per URL, under the pipeline cache."""
    base = os.environ.get("PIPELINE_CACHE_DIR")
    root = Path(base) / "repos" if base else Path.home() / ".cache" / "pipeline" / "repos"
    return root / hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def _fetch_url(url: str, ref: str) -> tuple[Path, str]:
    """(cached bare repo, commit) for `ref` of `url`, fetched shallow the first time only.

    The commit a ref resolved to is pinned in the cache, so a rerun reads the same files
    even after the branch moves; delete the cache folder to fetch again.
    """
    repo = repo_cache_dir(url)
    pin = f"refs/pipeline/{hashlib.sha256(ref.encode('utf-8')).hexdigest()[:16]}"
    if not (repo / "HEAD").is_file():
        repo.mkdir(parents=True, exist_ok=True)
        init = _git("init", "--quiet", "--bare", str(repo))
        if init.returncode != 0:
            raise RuntimeError(f"cannot create the repository cache {repo}: {_stderr(init)}; "
                               "set PIPELINE_CACHE_DIR to a writable folder")
    pinned = _git("rev-parse", "--verify", "--quiet", f"{pin}^{{commit}}", cwd=repo)
    if pinned.returncode == 0:
        return repo, pinned.stdout.decode().strip()
    fetch = _git("fetch", "--quiet", "--depth", "1", "--no-tags", url, ref, cwd=repo)
    if fetch.returncode != 0:
        raise ValueError(f"seeds.path {url}: cannot fetch seeds.ref {ref!r}: {_stderr(fetch)}; "
                         "check the URL, and give a branch, a tag or a full commit hash")
    commit = _git("rev-parse", "FETCH_HEAD^{commit}", cwd=repo).stdout.decode().strip()
    _git("update-ref", pin, commit, cwd=repo)
    return repo, commit


def _resolve_local(path: str, ref: str) -> tuple[Path, str]:
    """(repository folder, commit) of a local checkout or bare repository."""
    repo = Path(path)
    if not repo.exists():
        raise FileNotFoundError(f"seeds.path {repo} does not exist; point it at a git "
                                "checkout, a bare repository or a URL git can clone")
    if not repo.is_dir() or _git("rev-parse", "--git-dir", cwd=repo).returncode != 0:
        raise ValueError(f"seeds.path {repo} is not a git repository; commit the files there "
                         "(`git init && git add -A && git commit`) or use seeds.source: "
                         "directory")
    found = _git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}",
                 cwd=repo)
    if found.returncode != 0:
        raise ValueError(f"seeds.ref {ref!r} is not a commit, branch or tag of seeds.path "
                         f"{repo} (an empty repository has no HEAD yet); list them with "
                         f"`git -C {repo} log --oneline --all --decorate`")
    return repo, found.stdout.decode().strip()


def _git_paths(repo: Path, commit: str,
               suffixes: tuple[str, ...] = (".py",)) -> list[tuple[str, str]]:
    """(path, blob id) of the wanted tracked files at `commit`, sorted by path.

    Run in a subfolder of a checkout, `ls-tree` lists only that folder; `--full-name`
    keeps paths relative to the repository root, as they are in the commit.
    """
    listing = _git("ls-tree", "-r", "-l", "-z", "--full-name", commit, cwd=repo)
    if listing.returncode != 0:
        raise RuntimeError(f"git ls-tree {commit} in {repo} failed: {_stderr(listing)}")
    out: list[tuple[str, str]] = []
    for entry in listing.stdout.decode("utf-8", "replace").split("\0"):
        meta, _, path = entry.partition("\t")
        fields = meta.split()
        if len(fields) != 4 or fields[1] != "blob" or fields[0] == "120000":
            continue  # submodules, symlinks
        parts = path.split("/")
        if any(d in DIRECTORY_SKIP or d.startswith(".") for d in parts[:-1]):
            continue
        if _wanted_file(parts[-1], suffixes) and fields[3].isdigit() \
                and int(fields[3]) <= MAX_FILE_BYTES:
            out.append((path, fields[2]))
    return sorted(out)


def _iter_git(cfg: SeedsConfig, suffixes: tuple[str, ...] = (".py",)) -> Iterator[SourceFile]:
    if shutil.which("git") is None:
        raise RuntimeError("seeds.source git needs the `git` command: install it (e.g. "
                           "`apt-get install git`) or use seeds.source: directory")
    path = cfg.path or ""
    repo, commit = _fetch_url(path, cfg.ref) if is_git_url(path) else \
        _resolve_local(path, cfg.ref)
    files = _git_paths(repo, commit, suffixes)
    random.Random(cfg.order_seed).shuffle(files)
    with subprocess.Popen(["git", "cat-file", "--batch"], cwd=repo, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            for rel, blob in files:
                proc.stdin.write(f"{blob}\n".encode())
                proc.stdin.flush()
                header = proc.stdout.readline().split()
                if len(header) != 3:
                    continue  # "<id> missing"
                data = proc.stdout.read(int(header[2]) + 1)[:-1]  # content, then a newline
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    continue
                yield SourceFile(ref=f"{commit[:12]}:{rel}", text=text)
        finally:
            proc.stdin.close()


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
    random.Random(cfg.order_seed).shuffle(order)
    for i in order:
        text = ds[i][cfg.column]
        if isinstance(text, str) and len(text) <= MAX_FILE_BYTES:
            yield SourceFile(ref=f"{cfg.split}/{i}", text=text)
