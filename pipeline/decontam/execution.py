"""Decontamination by execution: does the sample's code pass a benchmark item's own tests?

A text method sees words; a model that memorised a benchmark problem may write it with
other names and other words, but the behaviour stays. Each top-level function of a
record's code is tried as every benchmark item whose entry point takes as many positional
arguments: bound to the entry point's name, the item's tests are run on it. A full pass
means the same behaviour: contaminated.

Retrieval cannot narrow this down: measured on the evaluation set, the right item's rank
by code embedding or code n-grams is often in the hundreds for renamed, restructured
code. So the items are probed in bulk: one sandbox run tries up to `chunk` items in turn
(`probe_program`), each with its own time limit, its output discarded, and prints the
items that passed; the nearest items (by the text methods) come first, so the first hit
is the likeliest one. A run that fails, times out or errors yields no match, and is
counted (`runs_<status>`), never turned into a verdict.
"""

from __future__ import annotations

import ast
import functools
import json
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.decontam.benchmarks import BenchmarkItem, quiet_parse

MAX_FUNCTIONS = 3
HITS = "DECONTAM_HITS "

_RUNTIME = Path(__file__).with_name("probe_runtime.py")
MAX_CALLS = 5


def literal_calls(item: BenchmarkItem) -> list[str]:
    """The literal argument tuples (as repr) of the first calls of the entry point in the
    item's tests (HumanEval: of `candidate`), for the differential check."""
    try:
        tree = quiet_parse(item.tests)
    except (SyntaxError, ValueError):
        return []
    names = {item.entry_point, "candidate"}
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in names and node.args and not node.keywords:
            try:
                args = tuple(ast.literal_eval(a) for a in node.args)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            text = repr(args)
            if len(text) <= 2000 and text not in out:
                out.append(text)
        if len(out) >= MAX_CALLS:
            break
    return out


@functools.cache
def _runtime_source() -> str:
    return _RUNTIME.read_text()


def probe_entry(key: int, item: BenchmarkItem) -> list[Any]:
    """What the probe needs of one item (see probe_runtime.probe)."""
    return [key, item.entry_point, item.tests, item.code, literal_calls(item)]


def probe_program(function: str, entries: list[list[Any]], limit_s: float) -> str:
    """Tests that try `function` as each item of `entries` (`probe_entry`) and print the
    keys that hit (`pipeline/decontam/probe_runtime.py`, run in a namespace of its own so
    that the sample's names cannot clash with it)."""
    payload = json.dumps(entries)
    return (f"_decontam_rt = {{'__name__': 'decontam_probe'}}\n"
            f"exec(compile({_runtime_source()!r}, 'decontam_probe.py', 'exec'), "
            f"_decontam_rt)\n"
            f"_decontam_hits = _decontam_rt['probe'](globals(), {function!r}, {payload!r}, "
            f"{limit_s!r}, {HITS!r})\n"
            f"assert isinstance(_decontam_hits, list)\n")


def _functions(code: str) -> list[tuple[str, int, int]]:
    """(name, fewest positional args, most positional args) of each top-level function."""
    try:
        tree = quiet_parse(code)
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            most = len(a.posonlyargs) + len(a.args)
            out.append((node.name, most - len(a.defaults), 10**6 if a.vararg else most))
    return out


def _arity(item: BenchmarkItem) -> int | None:
    for name, _, most in _functions(item.code):
        if name == item.entry_point:
            return most
    return None


def probe_sandbox(cfg: Any) -> Any:
    """The sandbox config for probes: one run tries a whole chunk of items, so it gets
    at least 60 s (each item has its own limit inside)."""
    return cfg.model_copy(update={"timeout_s": max(cfg.timeout_s, 60.0)})


class ExecutionChecker:
    """Runs the probes in a `SandboxPool` (started and closed by the owner)."""

    def __init__(self, pool: Any, chunk: int = 128, limit_s: float = 0.5) -> None:
        self.pool = pool
        self.chunk = chunk
        self.limit_s = limit_s
        self.counters: Counter[str] = Counter()
        #: Per job of the last `check`, the hit's agreement with the reference.
        self.agreement: list[float] = []
        self._prepared: tuple[int, list[int | None], list[list[Any]]] | None = None

    def _prepare(self, items: list[BenchmarkItem]) -> tuple[list[int | None], list[list[Any]]]:
        """Per item, the entry point's arity (-1: no tests to run) and its probe entry,
        computed once for the item list the checker is used with."""
        if self._prepared is None or self._prepared[0] != id(items):
            arity = [_arity(it) if it.tests and it.entry_point else -1 for it in items]
            self._prepared = (id(items), arity,
                              [probe_entry(i, it) for i, it in enumerate(items)])
        return self._prepared[1], self._prepared[2]

    def check(self, jobs: list[tuple[str, list[int]]], items: list[BenchmarkItem]
              ) -> list[int | None]:
        """For each (code, nearest item indexes): the item whose tests the code passes
        with the highest agreement on altered inputs, nearest first among equals, or
        None; `self.agreement` holds the hits' agreement."""
        arity, entries = self._prepare(items)
        runs: list[tuple[int, str, str]] = []
        order: list[dict[int, int]] = []
        for n, (code, near) in enumerate(jobs):
            ranked = list(dict.fromkeys([*near, *range(len(items))]))
            order.append({i: r for r, i in enumerate(ranked)})
            for fn, lo, hi in (_functions(code) if code else [])[:MAX_FUNCTIONS]:
                fits = [i for i in ranked
                        if arity[i] != -1 and (arity[i] is None or lo <= arity[i] <= hi)]
                for start in range(0, len(fits), self.chunk):
                    chunk = fits[start:start + self.chunk]
                    runs.append((n, code, probe_program(fn, [entries[i] for i in chunk],
                                                        self.limit_s)))
        hits: list[int | None] = [None] * len(jobs)
        self.agreement = [0.0] * len(jobs)
        if not runs:
            return hits
        results = self.pool.run_many((k, code, tests) for k, (_, code, tests)
                                     in enumerate(runs))
        for (n, _, _), res in zip(runs, results, strict=True):
            self.counters[f"runs_{res.get('status')}"] += 1
            found = _parse_hits(str(res.get("stdout") or "")) \
                if res.get("status") == "passed" else []
            for i, share in found:
                self.counters["tests_passed_items"] += 1
                value = 1.0 if share is None else share  # None: the tests' verdict alone
                best = self.agreement[n]
                if hits[n] is None or (value, -order[n][i]) > (best, -order[n][hits[n]]):
                    hits[n], self.agreement[n] = i, value
        return hits


def _parse_hits(stdout: str) -> list[tuple[int, float | None]]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(HITS):
            try:
                return [(int(k), None if a is None else float(a))
                        for k, a in json.loads(line[len(HITS):])]
            except (ValueError, TypeError):
                return []
    return []
