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
import json
from collections import Counter
from typing import Any

from pipeline.decontam.benchmarks import BenchmarkItem, quiet_parse

MAX_FUNCTIONS = 3
HITS = "DECONTAM_HITS "

_PROBE = """
import contextlib as _c, io as _io, json as _j, signal as _s
_ITEMS = _j.loads({items!r})
def _expired(*_a):
    raise TimeoutError("decontamination probe time limit")
_s.signal(_s.SIGALRM, _expired)
_hits = []
for _key, _entry, _tests in _ITEMS:
    _ns = dict(globals())
    _ns[_entry] = globals()[{function!r}]
    try:
        with _c.redirect_stdout(_io.StringIO()), _c.redirect_stderr(_io.StringIO()):
            _s.setitimer(_s.ITIMER_REAL, {limit!r})
            try:
                exec(_tests, _ns)
            finally:
                _s.setitimer(_s.ITIMER_REAL, 0)
    except BaseException:
        continue
    _hits.append(_key)
print({marker!r} + _j.dumps(_hits), flush=True)
assert isinstance(_hits, list)
"""


def probe_program(function: str, items: list[tuple[int, BenchmarkItem]],
                  limit_s: float) -> str:
    """Tests that try `function` as each (key, item) and print the keys that passed."""
    payload = json.dumps([[k, it.entry_point, it.tests] for k, it in items])
    return _PROBE.format(items=payload, function=function, limit=limit_s, marker=HITS)


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

    def check(self, jobs: list[tuple[str, list[int]]], items: list[BenchmarkItem]
              ) -> list[int | None]:
        """For each (code, nearest item indexes): the first item, nearest first, whose
        tests the code passes, or None."""
        arity = [_arity(it) if it.tests and it.entry_point else -1 for it in items]
        runs: list[tuple[int, str, str]] = []
        order: list[dict[int, int]] = []
        for n, (code, near) in enumerate(jobs):
            ranked = list(dict.fromkeys([*near, *range(len(items))]))
            order.append({i: r for r, i in enumerate(ranked)})
            for fn, lo, hi in (_functions(code) if code else [])[:MAX_FUNCTIONS]:
                fits = [(i, items[i]) for i in ranked
                        if arity[i] != -1 and (arity[i] is None or lo <= arity[i] <= hi)]
                for start in range(0, len(fits), self.chunk):
                    runs.append((n, code, probe_program(fn, fits[start:start + self.chunk],
                                                        self.limit_s)))
        hits: list[int | None] = [None] * len(jobs)
        if not runs:
            return hits
        results = self.pool.run_many((k, code, tests) for k, (_, code, tests)
                                     in enumerate(runs))
        for (n, _, _), res in zip(runs, results, strict=True):
            self.counters[f"runs_{res.get('status')}"] += 1
            found = _parse_hits(str(res.get("stdout") or "")) \
                if res.get("status") == "passed" else []
            for i in found:
                if hits[n] is None or order[n][i] < order[n][hits[n]]:
                    hits[n] = i
        return hits


def _parse_hits(stdout: str) -> list[int]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(HITS):
            try:
                return [int(k) for k in json.loads(line[len(HITS):])]
            except (ValueError, TypeError):
                return []
    return []
