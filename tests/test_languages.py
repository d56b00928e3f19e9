"""The language registry and JavaScript's seams: reply parsing, tests for the sandbox,
seed snippets from a real file, config rules. (JavaScript in the sandbox:
test_sandbox_javascript.py; a whole run: test_javascript_e2e.py.)"""

from __future__ import annotations

import json
import typing
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import ConfigError, GenerationConfig, parse_config
from pipeline.languages import JAVASCRIPT, LANGUAGES, PYTHON, get_language
from pipeline.languages.javascript import sandbox_tests, top_level_names
from pipeline.parse import ParsedReply, ParseFailure, parse_json_reply, parse_markdown_reply
from pipeline.prompts import render
from pipeline.record import RejectReason
from pipeline.seeds.snippets import extract_snippets, seed_sample
from pipeline.stages.oss_instruct import build_response, copied_example

FIXTURES = Path(__file__).parent / "fixtures"

JS_REPLY = """### Problem
Write a function `sumArray(xs)` that returns the sum of the numbers in `xs`.

### Solution
```javascript
function sumArray(xs) {
  return xs.reduce((a, b) => a + b, 0);
}
```

### Tests
```javascript
assert.strictEqual(sumArray([1, 2, 3]), 6);
assert.strictEqual(sumArray([]), 0);
```
"""


def _ok(result: ParsedReply | ParseFailure) -> ParsedReply:
    assert isinstance(result, ParsedReply), result
    return result


def test_registry_matches_the_config_and_ships_its_templates() -> None:
    field = GenerationConfig.model_fields["language"]
    assert set(typing.get_args(field.annotation)) == set(LANGUAGES)
    for spec in LANGUAGES.values():
        assert spec.suffixes and spec.fence_tags and spec.response_tag in spec.fence_tags
        for template in spec.oss_instruct_templates.values():
            prompt = render(template, seed="SEED-TEXT")
            assert "SEED-TEXT" in prompt and "{{" not in prompt
    assert get_language("python") is PYTHON
    with pytest.raises(ValueError, match="unsupported language 'ruby'; supported: python"):
        get_language("ruby")


def test_markdown_reply_in_javascript() -> None:
    r = _ok(parse_markdown_reply(JS_REPLY, "javascript"))
    assert r.problem.startswith("Write a function `sumArray(xs)`")
    assert r.solution == "function sumArray(xs) {\n  return xs.reduce((a, b) => a + b, 0);\n}"
    assert r.tests == ("assert.strictEqual(sumArray([1, 2, 3]), 6);\n"
                       "assert.strictEqual(sumArray([]), 0);")
    # The same reply has no Python code for the Python spec, and the other way round.
    assert parse_markdown_reply(JS_REPLY) == ParseFailure(RejectReason.UNPARSEABLE,
                                                          "no Python code block found")
    python_reply = JS_REPLY.replace("```javascript", "```python")
    assert parse_markdown_reply(python_reply, "javascript") == ParseFailure(
        RejectReason.UNPARSEABLE, "no JavaScript code block found")


def test_messy_javascript_reply_is_tidied() -> None:
    """`js` fences, `export`, usage lines and asserts in the solution, `module.exports`, a
    main guard, and tests that import assert and the solution, and copy it."""
    reply = (
        "Sure! Here you go.\n\n**Problem:** Write `clamp(x, lo, hi)` that clamps x.\n\n"
        "**Solution:**\n```js\nconst assert = require('assert');\n\n"
        "export function clamp(x, lo, hi) {\n  return Math.min(Math.max(x, lo), hi);\n}\n\n"
        "console.log(clamp(5, 0, 3));\nassert.strictEqual(clamp(-1, 0, 3), 0);\n"
        "module.exports = { clamp };\n\nif (require.main === module) {\n"
        "  assert.strictEqual(clamp(9, 0, 3), 3);\n  console.log('ok');\n}\n```\n\n"
        "**Tests:**\n```js\nimport assert from 'node:assert/strict';\n"
        "const { clamp } = require('./solution');\n"
        "function clamp(x) { return x; }\n\nassert.strictEqual(clamp(2, 0, 3), 2);\n```\n")
    r = _ok(parse_markdown_reply(reply, "javascript"))
    assert r.problem == "Write `clamp(x, lo, hi)` that clamps x."
    assert r.solution == "function clamp(x, lo, hi) {\n  return Math.min(Math.max(x, lo), hi);\n}"
    assert r.tests == ("assert.strictEqual(clamp(-1, 0, 3), 0);\n"
                       "assert.strictEqual(clamp(9, 0, 3), 3);\nconsole.log('ok');\n\n"
                       "assert.strictEqual(clamp(2, 0, 3), 2);")


@pytest.mark.parametrize(("solution", "tests", "reason"), [
    ("function f(x) {\n  return x +;\n}", "assert.strictEqual(f(1), 1);",
     RejectReason.SYNTAX_ERROR),
    ("const x = 3;", "assert.strictEqual(x, 3);", RejectReason.UNPARSEABLE),
    ("function f(x) { return x; }", "console.log(f(1));", RejectReason.NO_TESTS),
    ("function f(x) { return x; }", "assert.strictEqual(1, 1);", RejectReason.NO_TESTS),
    ("function f(x) { return x; }", "", RejectReason.NO_TESTS),
])
def test_unusable_javascript_replies(solution: str, tests: str, reason: RejectReason) -> None:
    reply = f"### Problem\nDo it.\n\n### Solution\n```js\n{solution}\n```\n\n### Tests\n" \
            f"```js\n{tests}\n```\n"
    result = parse_markdown_reply(reply, "javascript")
    assert isinstance(result, ParseFailure) and result.reason is reason, result


def test_arrow_functions_count_and_a_cut_off_test_is_salvaged() -> None:
    assert top_level_names("const twice = (x) => 2 * x;\nlet n = 3;\nclass A {}") == \
        {"twice", "A"}
    reply = JS_REPLY.replace("assert.strictEqual(sumArray([]), 0);\n```\n",
                             "assert.strictEqual(sumArray([]), 0);\nassert.strictEqual(sumA")
    assert _ok(parse_markdown_reply(reply, "javascript")).tests.count("assert") == 2


def test_json_reply_in_javascript() -> None:
    reply = json.dumps({
        "problem": "Write `twice(x)`.",
        "solution": "```javascript\nconst twice = (x) => 2 * x;\n```",
        "tests": ["assert.strictEqual(twice(2), 4);", "assert.strictEqual(twice(0), 0);"]})
    r = _ok(parse_json_reply(reply, "javascript"))
    assert r.solution == "const twice = (x) => 2 * x;"
    assert r.tests == "assert.strictEqual(twice(2), 4);\nassert.strictEqual(twice(0), 0);"


def test_sandbox_tests_are_counted_statements() -> None:
    tests = ("// checks\nconst xs = [1, 2];\nassert.deepStrictEqual(twice(xs), [2, 4]);\n"
             "function check(f) {\n  assert.strictEqual(f(1), 2);\n}\ncheck(twice);\n"
             "console.log('done');\nassert(twice(0) === 0);\n")
    assert sandbox_tests(tests) == [
        ["const xs = [1, 2];", False, 2],
        ["assert.deepStrictEqual(twice(xs), [2, 4]);", True, 3],
        ["function check(f) {\n  assert.strictEqual(f(1), 2);\n}", False, 4],
        ["check(twice);", True, 7],
        ["console.log('done');", False, 8],
        ["assert(twice(0) === 0);", True, 9]]
    assert sandbox_tests("assert.strictEqual(f(1), 1") == \
        [["assert.strictEqual(f(1), 1", True, 1]]  # runs, and fails with the SyntaxError
    assert PYTHON.sandbox_tests("assert f(1) == 1") == "assert f(1) == 1"


def test_sandbox_tests_count_by_the_runners_rule() -> None:
    # The rule of pipeline/sandbox/runner/testcount.py: a loop over cases is one test, a
    # helper that calls a checker checks too, a try/catch that swallows a failed assert and
    # an uncalled checker are not tests; tidy_tests then has nothing to count: no_tests.
    tests = ("for (const x of [1, 2]) {\n  assert.ok(twice(x) > x);\n}\n"
             "[1, 2].forEach((x) => assert.ok(twice(x) > 0));\n"
             "const same = (f) => { assert.strictEqual(f(1), 2); };\n"
             "function run() { same(twice); }\nrun();\n"
             "try {\n  assert.strictEqual(twice(1), 3);\n} catch (e) {}\n")
    assert [u[1] for u in sandbox_tests(tests)] == [True, True, False, False, True, False]
    for swallowed in ("try {\n  assert.strictEqual(twice(1), 2);\n} catch (e) {}\n",
                      "function check() {\n  assert.strictEqual(twice(1), 2);\n}\n"):
        assert JAVASCRIPT.check("const twice = (x) => 2 * x;", swallowed)[0] \
            is RejectReason.NO_TESTS


def test_snippets_from_a_real_javascript_file() -> None:
    """ms 2.1.3's index.js (MIT): four functions, `parse` too long for 40 lines."""
    text = (FIXTURES / "js" / "ms.js").read_text()
    stats: Counter[str] = Counter()
    snippets = extract_snippets(text, 4, 40, stats=stats, language="javascript")
    assert [s.name for s in snippets] == ["fmtShort", "fmtLong", "plural"]
    assert stats == {"candidates": 4, "dropped_too_long": 1}
    assert snippets[2].text.startswith("function plural(ms, msAbs, n, name) {")
    assert [s.name for s in extract_snippets(text, 4, 80, language="javascript")] == \
        ["parse", "fmtShort", "fmtLong", "plural"]
    # The Python parser finds nothing in it.
    assert extract_snippets(text, 4, 80) == []
    seed = seed_sample("ms.js", snippets[2], "javascript")
    assert seed.language == "javascript" and seed.seed_ref == "ms.js:183-186"


def test_javascript_snippet_rules() -> None:
    source = (
        "class Stack {\n  constructor() {\n    this.items = [];\n  }\n\n"
        "  push(item) {\n    this.items.push(item);\n    return this;\n  }\n\n"
        "  peek() {\n    // not yet\n  }\n}\n\n"
        "export function todo(a, b) {\n  'use strict';\n  throw new Error('todo');\n}\n\n"
        "function broken(a {\n  return a;\n}\n")
    stats: Counter[str] = Counter()
    snippets = extract_snippets(source, 3, 20, stats=stats, language="javascript")
    assert [s.name for s in snippets] == ["Stack", "constructor", "push"]
    assert snippets[2].text == "push(item) {\n  this.items.push(item);\n  return this;\n}"
    assert stats["dropped_stub"] == 2 and stats["dropped_syntax_error"] == 1


def test_responses_and_copied_examples_per_language() -> None:
    assert build_response("function f() {}", "", "javascript") == \
        "```javascript\nfunction f() {}\n```"
    assert build_response("def f(): pass") == "```python\ndef f(): pass\n```"
    template = JAVASCRIPT.oss_instruct_templates["markdown"]
    assert copied_example(template, "function countVowels(t) { return 0; }",
                          "javascript") == "countVowels"
    assert copied_example(template, "function other(t) { return 0; }", "javascript") is None


def test_config_rejects_what_javascript_does_not_support(tmp_path: Path) -> None:
    seeds = {"source": "directory", "path": str(tmp_path)}
    cfg = parse_config({"generation": {"language": "javascript"}, "seeds": seeds})
    assert cfg.generation.language == "javascript"
    with pytest.raises(ConfigError, match=r"generation.strategies \['self_instruct'\] do not "
                       r"support generation.language 'javascript' \(it supports "
                       r"\['oss_instruct'\]\); remove them or set generation.language: python"):
        parse_config({"generation": {"language": "javascript",
                                     "strategies": ["oss_instruct", "self_instruct"]},
                      "seeds": seeds})
    with pytest.raises(ConfigError, match=r"transform.enabled works on Python code only"):
        parse_config({"generation": {"language": "javascript"}, "seeds": seeds,
                      "transform": {"enabled": True}})
    with pytest.raises(ConfigError, match=r"seeds.source 'stdlib' is Python's standard "
                       r"library.*folder of .js/.mjs/.cjs files"):
        parse_config({"generation": {"language": "javascript"}})
    with pytest.raises(ConfigError, match=r"generation.language: Input should be 'python' or "
                       r"'javascript' \(got 'ruby'\)"):
        parse_config({"generation": {"language": "ruby"}})
