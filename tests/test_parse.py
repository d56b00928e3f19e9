"""Reply parsing: hand-written messy variants, then real model output (fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.parse import ParsedReply, ParseFailure, parse_json_reply, parse_markdown_reply
from pipeline.record import RejectReason

FIXTURES = Path(__file__).parent / "fixtures" / "replies"

CANONICAL = """### Problem
Write a function `add(a, b)` that returns the sum of two integers.

### Solution
```python
def add(a, b):
    return a + b
```

### Tests
```python
assert add(1, 2) == 3
assert add(-1, 1) == 0
```
"""


def _ok(result: ParsedReply | ParseFailure) -> ParsedReply:
    assert isinstance(result, ParsedReply), result
    return result


def test_canonical_reply() -> None:
    r = _ok(parse_markdown_reply(CANONICAL))
    assert r.problem == "Write a function `add(a, b)` that returns the sum of two integers."
    assert r.solution == "def add(a, b):\n    return a + b"
    assert r.tests == "assert add(1, 2) == 3\nassert add(-1, 1) == 0"


@pytest.mark.parametrize("header", [
    "## Problem", "**Problem:**", "**Problem**:", "Problem:", "1. Problem", "### 1. Problem",
    "**Problem Statement**", "### Task", "Problem Description:",
])
def test_problem_header_variants(header: str) -> None:
    reply = CANONICAL.replace("### Problem", header)
    assert _ok(parse_markdown_reply(reply)).problem.startswith("Write a function `add")


def test_inline_headers_fence_tags_and_leading_prose() -> None:
    reply = (
        "Sure! Here is a new problem inspired by the snippet.\n\n"
        "**Problem:** Write a function `add(a, b)` that adds.\n\n"
        "**Solution:**\n```py\ndef add(a, b):\n    return a + b\n```\n"
        "The function simply adds its arguments.\n\n"
        "**Test cases:**\n```\nassert add(2, 2) == 4\n```\n"
    )
    r = _ok(parse_markdown_reply(reply))
    assert r.problem == "Write a function `add(a, b)` that adds."
    assert r.tests == "assert add(2, 2) == 4"
    assert r.explanation == "The function simply adds its arguments."


def test_tests_inside_solution_block_and_main_guard() -> None:
    reply = (
        "### Problem\nSquare a number with `sq(x)`.\n\n### Solution\n```python\n"
        "def sq(x):\n    return x * x\n\nprint(sq(3))\n\n"
        "if __name__ == \"__main__\":\n    assert sq(3) == 9\n    print('ok')\n```\n"
    )
    r = _ok(parse_markdown_reply(reply))
    assert r.solution == "def sq(x):\n    return x * x"
    assert r.tests == "assert sq(3) == 9\nprint('ok')"


def test_tests_redefining_the_solution_are_stripped() -> None:
    reply = CANONICAL.replace(
        "```python\nassert add(1, 2)",
        "```python\nfrom solution import add\n\ndef add(a, b):\n    return 3\n\nassert add(1, 2)")
    r = _ok(parse_markdown_reply(reply))
    assert r.tests == "assert add(1, 2) == 3\nassert add(-1, 1) == 0"


def test_uncalled_test_functions_get_called() -> None:
    reply = CANONICAL.replace(
        "assert add(1, 2) == 3\nassert add(-1, 1) == 0",
        "def test_add():\n    assert add(1, 2) == 3\n\ndef test_neg():\n    assert add(-1, 1) == 0")
    r = _ok(parse_markdown_reply(reply))
    assert r.tests.endswith("test_add()\ntest_neg()")


def test_unittest_class_gets_a_runner() -> None:
    reply = CANONICAL.replace(
        "assert add(1, 2) == 3\nassert add(-1, 1) == 0",
        "import unittest\n\nclass TestAdd(unittest.TestCase):\n"
        "    def test_add(self):\n        self.assertEqual(add(1, 2), 3)")
    assert _ok(parse_markdown_reply(reply)).tests.endswith("unittest.main()")


def test_missing_final_fence_and_cut_off_last_test() -> None:
    reply = CANONICAL.rstrip().removesuffix("```").rstrip() + "\nassert add(2, 3) =="
    r = _ok(parse_markdown_reply(reply))
    assert r.tests == "assert add(1, 2) == 3\nassert add(-1, 1) == 0"


def test_no_headers_at_all() -> None:
    reply = ("Write `neg(x)` returning -x.\n\n```python\ndef neg(x):\n    return -x\n```\n\n"
             "```python\nassert neg(2) == -2\n```")
    r = _ok(parse_markdown_reply(reply))
    assert r.problem == "Write `neg(x)` returning -x."
    assert r.tests == "assert neg(2) == -2"


def test_non_python_blocks_are_ignored() -> None:
    reply = CANONICAL.replace("### Tests", "Output:\n```text\n3\n```\n\n### Tests")
    assert _ok(parse_markdown_reply(reply)).solution == "def add(a, b):\n    return a + b"


@pytest.mark.parametrize(("reply", "reason", "detail"), [
    ("", RejectReason.UNPARSEABLE, "empty reply"),
    ("I cannot help with that.", RejectReason.UNPARSEABLE, "no Python code block"),
    ("```python\ndef f():\n    return 1\n```", RejectReason.UNPARSEABLE, "no problem"),
    ("Problem:\nDo it.\n```python\nx = 1\n```\n```python\nassert x == 1\n```",
     RejectReason.UNPARSEABLE, "defines no function"),
    (CANONICAL.replace("return a + b", "return a +"), RejectReason.SYNTAX_ERROR, "solution"),
    (CANONICAL.replace("assert add(1, 2) == 3\nassert add(-1, 1) == 0", "print(add(1, 2))"),
     RejectReason.NO_TESTS, "no assert"),
    (CANONICAL.replace("assert add(1, 2) == 3\nassert add(-1, 1) == 0", "assert 1 + 1 == 2"),
     RejectReason.NO_TESTS, "calls the solution"),
    (CANONICAL.split("### Tests")[0], RejectReason.NO_TESTS, ""),
    (CANONICAL.replace("assert add(1, 2) == 3", "assert add(1, 2) == (3"),
     RejectReason.SYNTAX_ERROR, "tests"),
])
def test_rejections(reply: str, reason: RejectReason, detail: str) -> None:
    result = parse_markdown_reply(reply)
    assert isinstance(result, ParseFailure), result
    assert result.reason is reason
    assert detail in result.detail


JSON_REPLY = {"problem": "Write `add(a, b)`.", "solution": "def add(a, b):\n    return a + b",
              "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]}


@pytest.mark.parametrize("wrap", [
    "{}", "```json\n{}\n```", "Here you go:\n{}\nHope this helps!", "{}\n\n{{\"x\": 1}}",
])
def test_json_reply_wrappers(wrap: str) -> None:
    r = _ok(parse_json_reply(wrap.replace("{}", json.dumps(JSON_REPLY), 1)))
    assert r.solution == JSON_REPLY["solution"]
    assert r.tests == "assert add(1, 2) == 3\nassert add(0, 0) == 0"


def test_json_reply_missing_closing_brace() -> None:
    cut = json.dumps(JSON_REPLY)[:-1] + "\n```"
    assert _ok(parse_json_reply(cut)).tests.startswith("assert add(1, 2) == 3")


def test_json_reply_variants() -> None:
    raw_newlines = ('{"problem": "P", "solution": "def f():\n    return 1", '
                    '"tests": "assert f() == 1"}')
    assert _ok(parse_json_reply(raw_newlines)).tests == "assert f() == 1"
    fenced = dict(JSON_REPLY, solution="```python\ndef add(a, b):\n    return a + b\n```")
    assert _ok(parse_json_reply(json.dumps(fenced))).solution == JSON_REPLY["solution"]
    in_solution = dict(JSON_REPLY, tests=[],
                       solution="def add(a, b):\n    return a + b\nassert add(1, 1) == 2")
    assert _ok(parse_json_reply(json.dumps(in_solution))).tests == "assert add(1, 1) == 2"


@pytest.mark.parametrize(("reply", "detail"), [
    ("", "empty reply"),
    ('{"problem": "P", "solution": "def f(): return 1", "tests": ["assert f() ==',
     "tests do not parse"),
    ('{"problem": "P", "solution": ', "no JSON"),
    ('{"problem": "P", "solution": "def f(', "solution: line 1"),
    ('{"solution": "def f(): return 1", "tests": ["assert f() == 1"]}', "no 'problem'"),
    ('["not", "an", "object"]', "no JSON"),
])
def test_json_rejections(reply: str, detail: str) -> None:
    result = parse_json_reply(reply)
    assert isinstance(result, ParseFailure) and detail in result.detail


# -- real replies (tests/fixtures/replies/README.md) -------------------------------------

#: One letter per reply: P parsed, U unparseable, N no_tests, S syntax_error.
EXPECTED = {
    "qwen05b_json.json": "PPPPPPPPPPPP",
    "qwen05b_markdown.json": "PPPPPPPPPPPP",
    "qwen05b_markdown_s1.json": "PPPPPPPPPPPP",
    "qwen05b_markdown_v1.json": "PPPPPPPPPPPP",
    "qwen05b_markdown_v2.json": "PPPPPPPUPPPP",
    "qwen05b_markdown_v2_s1.json": "PPPPPPPUPPPP",
    "qwen05b_markdown_v3.json": "PPPPPPPUPPPP",
    "qwen05b_markdown_v4.json": "PPPPPPPPPPPP",
    "qwen05b_noschema_json.json": "PPUPUPPPPPNP",
    "smollm2_json.json": "SPSSSSNSSSSS",
    "smollm2_markdown.json": "UUUUNUUNPUNU",
}
_LETTER = {RejectReason.UNPARSEABLE: "U", RejectReason.NO_TESTS: "N",
           RejectReason.SYNTAX_ERROR: "S"}


def _fixture(name: str) -> list[dict]:
    return json.loads((FIXTURES / name).read_text())


def _parse(record: dict) -> ParsedReply | ParseFailure:
    parse = parse_json_reply if "json" in record["template"] else parse_markdown_reply
    return parse(record["reply"])


def test_every_fixture_is_pinned() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_replies_parse_as_pinned(name: str) -> None:
    got = ""
    for record in _fixture(name):
        result = _parse(record)
        if isinstance(result, ParseFailure):
            got += _LETTER[result.reason]
            continue
        got += "P"
        compile(result.solution, "solution", "exec")
        compile(result.tests, "tests", "exec")
        assert result.problem and "```" not in result.solution and "###" not in result.tests
    assert got == EXPECTED[name]


def test_real_reply_with_several_problems_keeps_the_first() -> None:
    record = _fixture("qwen05b_markdown_v1.json")[1]
    assert record["reply"].count("### Problem") == 2
    r = _ok(_parse(record))
    assert r.solution.startswith("def sum_of_squares(") and "count_odd" not in r.solution
    assert "count_odd" not in r.tests and r.tests.count("assert") == 3


def test_real_reply_bare_code_block_is_unparseable() -> None:
    record = _fixture("qwen05b_markdown_v2.json")[7]
    assert record["reply"].startswith("```python")  # no problem statement at all
    result = _parse(record)
    assert isinstance(result, ParseFailure) and "no problem statement" in result.detail


def test_real_json_with_raw_newlines_and_missing_brace() -> None:
    raw = _fixture("qwen05b_json.json")[5]  # raw newlines inside the "solution" string
    assert "x-coordinate\n" in raw["reply"]
    assert "\ndef find_closest_pair(" in _ok(_parse(raw)).solution
    cut = _fixture("qwen05b_noschema_json.json")[1]  # the final "}" is missing
    assert not cut["reply"].rstrip().endswith("}")
    assert _ok(_parse(cut)).tests.startswith('assert is_palindrome("hello") == False')


def test_real_reply_missing_typing_import_is_added() -> None:
    r = _ok(_parse(_fixture("qwen05b_markdown_v1.json")[5]))
    assert r.solution.startswith("from typing import Tuple\n\ndef max_min(")
