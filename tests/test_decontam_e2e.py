"""Decontamination inside a real run: the fake model answers one seed with HumanEval/0 in
other words and other names; the run rejects it as contaminated with the benchmark and
its task id, and keeps the clean sample (real sandbox, real embedding model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import pytest

from pipeline.config import parse_config
from pipeline.run import run_pipeline
from tests.fake_openai_server import FakeOpenAIServer, Reply
from tests.test_run_e2e import SEED_FILES

SEEDS = {k: v for k, v in SEED_FILES.items() if k in ("alpha.py", "beta.py")}

# HumanEval/0 (has_close_elements), reworded, renamed and restructured.
LEAK = """### Problem
You get a sequence of floating point readings and a tolerance. Report whether at least one
pair of distinct readings differs by strictly less than the tolerance.

### Solution
```python
def any_pair_within(readings, tol):
    ordered = sorted(readings)
    return any(b - a < tol for a, b in zip(ordered, ordered[1:]))
```

### Tests
```python
assert any_pair_within([1.0, 2.0, 3.0], 0.5) is False
assert any_pair_within([1.0, 2.8, 3.0, 4.0], 0.3) is True
```
"""

CLEAN = """### Problem
Write a function that groups words by their first letter (lowercased) and returns a dict
mapping each letter to the words in their original order.

### Solution
```python
def group_by_initial(words):
    out = {}
    for w in words:
        out.setdefault(w[:1].lower(), []).append(w)
    return out
```

### Tests
```python
assert group_by_initial(["Apple", "avocado", "beet"]) == {"a": ["Apple", "avocado"], "b": ["beet"]}
assert group_by_initial([]) == {}
```
"""


def model(request: dict[str, Any]) -> Reply:
    prompt = request["messages"][-1]["content"]
    return Reply.ok(LEAK if "def clamp" in prompt else CLEAN)


@pytest.mark.docker
def test_a_paraphrased_benchmark_problem_is_rejected_with_its_benchmark_and_id(
        tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name, text in SEEDS.items():
        (src / name).write_text(text.lstrip())
    with FakeOpenAIServer(handler=model) as srv:
        cfg = parse_config({
            "select": {"enabled": False},
            "seeds": {"source": "directory", "path": str(src)},
            "llm": {"backend": "openai", "base_url": srv.base_url, "model": "fake",
                    "max_retries": 1, "timeout_s": 5},
            "ray": {"executor": "local"},
        })
        stats = run_pipeline(cfg, tmp_path / "out")
    assert stats["kept"] == 1
    assert stats["rejected_by_reason"] == {"decontam/contaminated": 1}
    ds = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    train = datasets.concatenate_datasets(list(ds.values()))  # train and validation
    assert "group_by_initial" in train[0]["code"]
    [row] = datasets.load_from_disk(str(tmp_path / "out" / "rejected"))
    assert (row["stage"], row["reason"]) == ("decontam", "contaminated")
    c = row["contamination"]
    assert (c["benchmark"], c["match"], c["method"]) == ("humaneval", "HumanEval/0",
                                                         "execution")
    assert c["score"] == 1.0 and "HumanEval/0" in row["detail"]
    st = stats["stages"]["decontam"]
    assert st["in"] == 2 and st["dropped_contaminated"] == 1
    assert st["contaminated_humaneval_execution"] == 1
    order = stats["stage_order"]
    assert order.index("decontam") < order.index("dedup_exact") < order.index("dedup")
