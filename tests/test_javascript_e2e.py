"""A whole JavaScript run: .js seeds -> fake OpenAI server -> node in the Docker sandbox ->
dataset (generation.language: javascript). The model is a real HTTP server on 127.0.0.1
with scripted replies; the sandbox is real Docker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest

from pipeline.config import parse_config
from pipeline.languages.javascript import top_level_names
from pipeline.run import run_pipeline
from tests.fake_openai_server import FakeOpenAIServer, Reply
from tests.test_run_e2e import write_seeds

pytestmark = pytest.mark.docker

SEED_FILES = {
    "lib/range.js": """
function range(start, end, step = 1) {
  const out = [];
  for (let i = start; i < end; i += step) {
    out.push(i);
  }
  return out;
}
""",
    "lib/words.js": """
export function capitalize(text) {
  if (!text) {
    return text;
  }
  return text[0].toUpperCase() + text.slice(1);
}
""",
    "lib/garble.js": """
function garbleMarker(text) {
  const words = text.split(' ');
  words.reverse();
  return words.join(' ');
}
""",
    "lib/wrong.js": """
function wrongMarker(n) {
  let total = 0;
  for (let i = 0; i < n; i++) total += i;
  return total;
}
""",
    "node_modules/dep/index.js": "function skipped(a) {\n  a += 1;\n  a += 2;\n  return a;\n}\n",
    "lib/not_js.py": "def ignored(x):\n    x += 1\n    x += 2\n    return x\n",
}

SUM = """### Problem
Write a function `sumRange(start, end)` that returns the sum of the integers from `start`
up to but not including `end`.

### Solution
```javascript
function sumRange(start, end) {
  let total = 0;
  for (let i = start; i < end; i++) {
    total += i;
  }
  return total;
}
```

### Tests
```javascript
assert.strictEqual(sumRange(0, 4), 6);
assert.strictEqual(sumRange(3, 3), 0);
assert.deepStrictEqual([sumRange(-1, 2)], [0]);
```
"""

TITLE = """**Problem:** Write `titleCase(text)` that capitalizes the first letter of every word.

**Solution:**
```js
const titleCase = (text) => text.split(' ')
  .map((w) => (w ? w[0].toUpperCase() + w.slice(1) : w))
  .join(' ');
module.exports = { titleCase };
```

**Tests:**
```js
const assert = require('assert');
assert.strictEqual(titleCase('hello world'), 'Hello World');
assert.strictEqual(titleCase(''), '');
```
"""

WRONG = SUM.replace("total += i;", "total += i + 1;")


def model(request: dict[str, Any]) -> Reply:
    prompt = request["messages"][-1]["content"]
    assert "JavaScript programming problem" in prompt and "```javascript\n" in prompt
    if "garbleMarker" in prompt:
        return Reply.ok("Here is a nice problem about strings, no code at all.")
    if "wrongMarker" in prompt:
        return Reply.ok(WRONG)
    return Reply.ok(SUM if "function range" in prompt else TITLE)


@pytest.fixture
def seed_dir(tmp_path: Path) -> Path:
    return write_seeds(tmp_path / "src", SEED_FILES)


def test_javascript_run_writes_verified_javascript_rows(seed_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with FakeOpenAIServer(handler=model) as srv:
        cfg = parse_config({
        "select": {"enabled": False},  # selection has its own tests
        "decontam": {"enabled": False},  # decontamination has its own tests
            "generation": {"language": "javascript"},
            "seeds": {"source": "directory", "path": str(seed_dir), "max_seeds": 10,
                      "min_lines": 3},
            "llm": {"backend": "openai", "base_url": srv.base_url, "model": "fake",
                    "max_retries": 0, "timeout_s": 5},
            "sandbox": {"timeout_s": 10},
            "ray": {"executor": "local"},
        })
        stats = run_pipeline(cfg, out)
        assert len(srv.requests) == 4  # node_modules and the .py file are not seeds

    ds = datasets.load_from_disk(str(out / "dataset"))
    train = datasets.concatenate_datasets(list(ds.values()))  # train and validation
    assert train.num_rows == 2 and stats["kept"] == 2
    rows = list(train)
    assert [r["language"] for r in rows] == ["javascript", "javascript"]
    assert all(r["execution"]["status"] == "passed" for r in rows)
    by_name = {name: r for r in rows for name in top_level_names(r["code"])}
    assert set(by_name) == {"sumRange", "titleCase"}
    total = by_name["sumRange"]
    assert total["execution"]["tests_passed"] == total["execution"]["tests_total"] == 3
    assert total["response"].startswith("```javascript\nfunction sumRange(start, end) {")
    assert total["messages"][1]["content"] == total["response"]
    assert total["seed_ref"] == "lib/range.js:1-7" and total["strategy"] == "oss_instruct"
    title = by_name["titleCase"]
    assert "module.exports" not in title["code"] and "require" not in title["tests"]
    assert title["execution"]["tests_total"] == 2

    rejected = datasets.load_from_disk(str(out / "rejected"))
    assert sorted(zip(rejected["stage"], rejected["reason"], strict=True)) == \
        [("execute", "exec_failed"), ("oss_instruct", "unparseable")]
    failed = rejected[list(rejected["reason"]).index("exec_failed")]
    assert "tests.js line 1: AssertionError: Expected values to be strictly equal: 10 !== 6;" \
        in failed["detail"]
    on_disk = json.loads((out / "stats.json").read_text())
    assert on_disk["seeds"] == 4 and on_disk["yield"] == 0.5
