"""What runs inside the sandbox for decontamination by execution (standard library only).

`pipeline.decontam.execution.probe_program` sends this module's source, followed by one
call of `probe`, as the tests of a sandbox run whose code is the sample's code. For each
benchmark item, the sample's function is bound to the item's entry point and:

1. the item's own tests run on it (its output discarded, a time limit per item);
2. if they pass, the function is compared with the item's reference solution on inputs
   derived from the tests' own calls (each literal argument altered: numbers moved,
   sequences reversed, shortened and extended, strings changed). MBPP has three asserts a
   problem, which another function passes by coincidence (measured on the evaluation
   set: 11 of 56 clean samples with code passed some item's tests); a function that
   agrees with the reference on most altered inputs as well behaves the same.

For each item whose tests pass, its key and the share of compared altered inputs on which
the function agreed with the reference (None: none could be compared) are printed on one
line after `marker`; the host decides (`decontam.execution_agreement`).
"""

from __future__ import annotations

import ast
import contextlib
import copy
import io
import json
import math
import signal
from typing import Any


def _expired(*_args: object) -> None:
    raise TimeoutError("decontamination probe time limit")


def _limited(limit: float, fn: Any, *args: Any) -> Any:
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _altered(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, value * 2 + 3]
    if isinstance(value, float):
        return [value * 1.5 + 0.25, -value]
    if isinstance(value, str):
        # A space, a digit, punctuation and capitals: what one-word test inputs lack.
        return [value + " 7, Ab!", value[::-1], value[1:], value.swapcase()]
    if isinstance(value, list | tuple):
        kind = type(value)
        inner = [(_altered(v) or [v])[0] for v in value]
        return [kind(value[::-1]), kind(value[1:]), kind([*value, *value[:1]]), kind(inner)]
    return []


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
        except TypeError:
            return False
    try:
        return bool(a == b) or repr(a) == repr(b)
    except Exception:
        return False


def agreement(reference: Any, fn: Any, calls: list[tuple[Any, ...]], limit: float
              ) -> float | None:
    """The share of the altered inputs of `calls` that the reference answers on which `fn`
    gives the same (None when there is none to compare)."""
    compared = same = 0
    for args in calls:
        for i, value in enumerate(args):
            for new in _altered(value):
                variant = (*args[:i], new, *args[i + 1:])
                try:
                    expect = _limited(limit, reference, *copy.deepcopy(variant))
                except BaseException:
                    continue  # the reference rejects this input: nothing to compare
                compared += 1
                try:
                    got = _limited(limit, fn, *copy.deepcopy(variant))
                except BaseException:
                    continue
                same += _same(expect, got)
    return same / compared if compared else None


def probe(namespace: dict[str, Any], function: str, items: str, limit: float,
          marker: str) -> list[list[Any]]:
    """Try `namespace[function]` as each item of the JSON `items`
    ([key, entry point, tests, reference code, [repr of call args]]); print and return
    [key, agreement] for each item whose tests pass (agreement None: nothing to compare)."""
    signal.signal(signal.SIGALRM, _expired)
    fn = namespace[function]
    hits: list[list[Any]] = []
    for key, entry, tests, reference_code, calls in json.loads(items):
        ns = dict(namespace)
        ns[entry] = fn
        try:
            _limited(limit, exec, tests, ns)
        except BaseException:
            continue
        ref_ns: dict[str, Any] = {}
        try:
            _limited(limit, exec, reference_code, ref_ns)
            reference = ref_ns[entry]
            parsed = [ast.literal_eval(c) for c in calls]
        except BaseException:
            hits.append([key, None])
            continue
        hits.append([key, agreement(reference, fn, parsed, limit)])
    print(marker + json.dumps(hits), flush=True)
    return hits
