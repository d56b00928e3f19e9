"""Run-wide near-duplicate removal: repeats dropped with a reason, exemptions kept."""

from __future__ import annotations

from pipeline.dedup import drop_near_duplicates
from pipeline.record import RejectReason, Sample


def _s(instruction: str, parent: str, **kw) -> Sample:
    s = Sample(strategy=kw.pop("strategy", "oss_instruct"), instruction=instruction,
               parent_id=parent, code=kw.pop("code", "c"), **kw)
    s.assign_id()
    return s


def test_near_duplicates_are_rejected_naming_the_kept_one() -> None:
    a = _s("Write a function `is_prime(n: int) -> bool` that checks if a number is prime.", "p1")
    b = _s("Write a function `is_prime(n: int) -> bool` that checks if a given integer is "
           "prime.", "p2")
    c = _s("Write a function `reverse_list(lst)` that returns the list reversed.", "p3")
    stats = drop_near_duplicates([a, b, c], 0.7)
    dropped = [s for s in (a, b, c) if s.rejected]
    assert len(dropped) == 1 and dropped[0].reject_reason is RejectReason.DUPLICATE
    assert dropped[0].reject_stage == "dedup"
    survivor = a if dropped[0] is b else b
    assert survivor.id in dropped[0].reject_detail
    assert not c.rejected
    assert stats == {"in": 3, "out": 2, "dropped_duplicate": 1}


def test_candidates_of_one_instruction_and_variants_are_exempt() -> None:
    text = "Write a function `add(a, b)` that returns the sum."
    first = _s(text, "same-parent", code="def add(a, b): return a + b")
    second = _s(text, "same-parent", code="def add(a, b): return b + a")
    variant = _s(text, "x", kind="refactor", op="rename_local")
    other_parent = _s(text, "other-parent", code="def add(x, y): return x + y")
    drop_near_duplicates([first, second, variant, other_parent], 0.7)
    assert not variant.rejected
    # One problem survives: either both candidates of the first parent, or the other one.
    assert first.rejected == second.rejected != other_parent.rejected


def test_rejected_samples_are_left_alone() -> None:
    a = _s("Write a function `f` that doubles x.", "p1")
    b = _s("Write a function `f` that doubles x.", "p2").reject("execute",
                                                                  RejectReason.EXEC_FAILED)
    drop_near_duplicates([a, b], 0.7)
    assert not a.rejected and b.reject_stage == "execute"


def test_case2code_tasks_are_compared_on_their_examples_not_the_prompt() -> None:
    from pipeline.prompts import render
    from pipeline.stages.case2code import TEMPLATE
    from pipeline.stages.strategies import dedup_text

    def task(name: str, pairs: list[tuple[str, str]], parent: str) -> Sample:
        s = _s(render(TEMPLATE, name=name, examples=[{"call": c, "output": o}
                                                       for c, o in pairs]), parent,
               strategy="case2code")
        s.tests = "\n".join(f"assert {c} == {o}" for c, o in pairs)
        return s

    shift = task("caesar_shift", [("caesar_shift('Zebra!', 2)", "'Bgdtc!'"),
                                  ("caesar_shift('abc', 1)", "'bcd'")], "p1")
    spaces = task("collapse_whitespace", [("collapse_whitespace('  a  b ')", "'a b'"),
                                          ("collapse_whitespace('x\\ty')", "'x y'")], "p2")
    again = task("caesar_shift", [("caesar_shift('Zebra!', 2)", "'Bgdtc!'"),
                                  ("caesar_shift('abc', 1)", "'bcd'")], "p3")
    stats = drop_near_duplicates([shift, spaces, again], 0.7, dedup_text)
    assert stats["dropped_duplicate"] == 1
    assert [s.rejected for s in (shift, spaces, again)].count(True) == 1
    assert not spaces.rejected
