"""Exact and MinHash code dedup as global steps, within a run and against an earlier run."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline.dedup_code import ExactDedupStep, MinHashDedupStep, normalise_code
from pipeline.output import write_outputs
from pipeline.record import ExecStatus, Execution, RejectReason, Sample

MBPP = Path(__file__).resolve().parents[2] / "shared" / "data" / "mbpp-full.jsonl"


def _mbpp(n: int) -> list[dict]:
    return [json.loads(line) for line in MBPP.read_text().splitlines()[:n]]


def _sample(instruction: str, code: str, strategy: str = "oss_instruct", kind: str | None = None,
            parent: str | None = None) -> Sample:
    s = Sample(strategy=strategy, instruction=instruction, code=code, kind=kind,
               parent_id=parent, tests="assert True\n",
               execution=Execution(ExecStatus.PASSED, tests_passed=1, tests_total=1))
    s.assign_id()
    return s


def test_normalised_code_ignores_comments_and_layout() -> None:
    a = "def f(x):\n    # double it\n    return x*2\n"
    b = "def f(x):   return (x * 2)  # doubled\n"
    assert normalise_code(a) == normalise_code(b)
    assert normalise_code("function f() {  return 1 }") == "function f() { return 1 }"


def test_exact_step_drops_repeats_and_their_variants_keeps_others() -> None:
    row = _mbpp(3)[2]
    first = _sample(row["text"], row["code"])
    again = _sample(row["text"].upper() + "  ", row["code"].replace("\r\n", "\n# note\n"),
                    strategy="self_instruct")
    variant = _sample("fix it", row["code"] + "\n", kind="refactor", parent=again.id)
    other = _sample("Reverse a string.", "def r(s):\n    return s[::-1]\n")
    step = ExactDedupStep()
    out = step([first, again, variant, other])
    dropped = {s.id: s for s in out if s.rejected}
    assert set(dropped) == {again.id, variant.id}
    assert dropped[again.id].reject_reason is RejectReason.DUPLICATE
    assert first.id in dropped[again.id].reject_detail
    assert step.counters["dropped_duplicate"] == 2 and step.counters["duplicate_of_this_run"] == 1


def test_minhash_step_finds_renamed_code_not_distinct_code() -> None:
    # Two of these are `re.findall(<pattern>, text)` one-liners that differ only in the
    # pattern (strings are normalised): one shape for this normalisation, so one is left out.
    rows = [r for r in _mbpp(40) if r["task_id"] != 15]
    samples = [_sample(r["text"], r["code"].replace("\r\n", "\n")) for r in rows]
    src = rows[5]["code"].replace("\r\n", "\n")
    renamed = src
    renamed = renamed.replace("(", " ( ")
    names = sorted(set(re.findall(r"\b([a-z_][a-z0-9_]*)\b", src)) - {"def", "return",
                   "for", "in", "if", "else", "range", "len", "and", "or", "not", "while",
                   "import", "from", "is", "None", "True", "False", "elif", "lambda"})
    for k, name in enumerate(names):
        renamed = re.sub(rf"\b{name}\b", f"v{k}_x", renamed)
    copy = _sample("A different wording of the same task.", renamed)
    step = MinHashDedupStep(threshold=0.8)
    out = step(samples + [copy])
    dropped = [s for s in out if s.rejected]
    # Exactly one of the pair (same strategy and round: the later id is dropped).
    assert len(dropped) == 1
    assert dropped[0].id in (copy.id, samples[5].id)
    assert "MinHash" in dropped[0].reject_detail


def test_against_an_earlier_run_drops_what_it_holds(tmp_path: Path) -> None:
    rows = _mbpp(6)
    old = [_sample(r["text"], r["code"].replace("\r\n", "\n")) for r in rows[:3]]
    write_outputs(tmp_path / "prev", old, {"seeds": 3})
    new = [_sample(r["text"], r["code"].replace("\r\n", "\n")) for r in rows[2:6]]
    exact = ExactDedupStep(against=[str(tmp_path / "prev")])
    out = exact([*new])
    dropped = [s for s in out if s.rejected]
    assert [s.instruction for s in dropped] == [rows[2]["text"]]
    assert "earlier run's row" in dropped[0].reject_detail
    assert exact.counters["duplicate_of_earlier_run"] == 1
    fresh = [_sample(r["text"] + " (v2)", r["code"].replace("\r\n", "\n") + "\n\n")
             for r in rows[:2]]
    mh = MinHashDedupStep(threshold=0.8, against=[str(tmp_path / "prev" / "dataset")])
    out = mh(fresh)
    assert all(s.rejected for s in out) and mh.counters["duplicate_of_earlier_run"] == 2
