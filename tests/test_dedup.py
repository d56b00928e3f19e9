"""Near-duplicate global steps: repeats dropped with a reason, exemptions kept, a dropped
sample's variants dropped with it, Self-Instruct's pool merged across actors."""

from __future__ import annotations

from pipeline.dedup import DedupStep, SelfInstructNoveltyStep
from pipeline.executor.local import LocalExecutor
from pipeline.record import RejectReason, Sample
from pipeline.stages.strategies import dedup_text


def _s(instruction: str, parent: str, **kw) -> Sample:
    s = Sample(strategy=kw.pop("strategy", "oss_instruct"), instruction=instruction,
               parent_id=parent, code=kw.pop("code", "c"), **kw)
    s.assign_id()
    return s


def _dedup(samples: list[Sample]) -> dict[str, float]:
    return LocalExecutor().run([DedupStep(0.7, dedup_text)], samples).stage_stats["dedup"]


def test_near_duplicates_are_rejected_naming_the_kept_one() -> None:
    a = _s("Write a function `is_prime(n: int) -> bool` that checks if a number is prime.", "p1")
    b = _s("Write a function `is_prime(n: int) -> bool` that checks if a given integer is "
           "prime.", "p2")
    c = _s("Write a function `reverse_list(lst)` that returns the list reversed.", "p3")
    stats = _dedup([a, b, c])
    dropped = [s for s in (a, b, c) if s.rejected]
    assert len(dropped) == 1 and dropped[0].reject_reason is RejectReason.DUPLICATE
    assert dropped[0].reject_stage == "dedup"
    survivor = a if dropped[0] is b else b
    assert survivor.id in dropped[0].reject_detail
    assert not c.rejected
    assert (stats["in"], stats["out"], stats["dropped_duplicate"]) == (3, 2, 1)


def test_candidates_of_one_instruction_are_exempt() -> None:
    text = "Write a function `add(a, b)` that returns the sum."
    first = _s(text, "same-parent", code="def add(a, b): return a + b")
    second = _s(text, "same-parent", code="def add(a, b): return b + a")
    other_parent = _s(text, "other-parent", code="def add(x, y): return x + y")
    _dedup([first, second, other_parent])
    # One problem survives: either both candidates of the first parent, or the other one.
    assert first.rejected == second.rejected != other_parent.rejected


def test_a_dropped_sample_takes_its_variants_with_it() -> None:
    text = "Write a function `double(x)` that returns x times two."
    keep = _s(text, "p1")
    drop = _s(text + " ", "p2")
    if drop.id < keep.id:  # the walk is in id order: make `drop` the later one
        keep, drop = drop, keep
    refactor = _s(text, drop.id, kind="refactor", op="rename_local", code="v1")
    fix = _s("Fix the bug", drop.id, kind="bug", op="off_by_one", strategy="fix_bug")
    own = _s(text, keep.id, kind="refactor", op="rename_local", code="v2")
    unrelated = _s("Write a function `shout(s)` that upper-cases s.", "p3")
    stats = _dedup([keep, drop, refactor, fix, own, unrelated])
    assert drop.reject_reason is RejectReason.DUPLICATE
    for v in (refactor, fix):
        assert v.reject_stage == "dedup" and v.reject_reason is RejectReason.DUPLICATE
        assert f"variant of {drop.id}" in v.reject_detail
    assert not keep.rejected and not own.rejected and not unrelated.rejected
    assert stats["dropped_duplicate"] == 3 and stats["in"] == stats["out"] + 3 == 6


def test_rejected_samples_are_left_alone_and_uncounted() -> None:
    a = _s("Write a function `f` that doubles x.", "p1")
    b = _s("Write a function `f` that doubles x.", "p2").reject("execute",
                                                                  RejectReason.EXEC_FAILED)
    stats = _dedup([a, b])
    assert not a.rejected and b.reject_stage == "execute"
    assert stats["in"] == stats["out"] == 1


def test_case2code_tasks_are_compared_on_their_examples_not_the_prompt() -> None:
    from pipeline.prompts import render
    from pipeline.stages.case2code import TEMPLATE

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
    stats = _dedup([shift, spaces, again])
    assert stats["dropped_duplicate"] == 1
    assert [s.rejected for s in (shift, spaces, again)].count(True) == 1
    assert not spaces.rejected


SEED_TEXTS = ["Write a function `fizzbuzz(n)` returning the FizzBuzz strings from 1 to n.",
              "Write a function `count_vowels(s)` that counts the vowels in a string."]
NEW = "Write a function `running_max(xs)` returning the running maximum of a list of numbers."


def test_self_instruct_novelty_step_merges_actor_pools() -> None:
    """Two actors accepted near-copies of one task, and one repeated a seed: the step
    keeps one of the pair, drops the seed repeat, and leaves other samples alone."""
    a = Sample(strategy="self_instruct", parent_id="p1", round=1, instruction=NEW)
    b = Sample(strategy="self_instruct", parent_id="p2", round=1,
               instruction=NEW.replace("returning", "that gives"))
    d = Sample(strategy="self_instruct", parent_id="p3", round=1, instruction=SEED_TEXTS[1])
    solved = Sample(strategy="self_instruct", parent_id="p4", round=1, instruction=NEW,
                    code="def running_max(xs): ...")
    other = Sample(strategy="evol_instruct", parent_id="p5", round=1, instruction=NEW)
    for s in (a, b, d, solved, other):
        s.assign_id()
    res = LocalExecutor().run([SelfInstructNoveltyStep(0.7, SEED_TEXTS)],
                              [a, b, d, solved, other])
    stats = res.stage_stats["self_instruct_novelty"]
    assert d.reject_reason is RejectReason.DUPLICATE and "pool item" in d.reject_detail
    assert sum(s.rejected for s in (a, b)) == 1
    assert not solved.rejected and not other.rejected  # not in its scope
    assert (stats["in"], stats["out"], stats["dropped_duplicate"]) == (3, 1, 2)
