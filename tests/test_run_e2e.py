"""The whole job end to end: seeds -> fake OpenAI server -> Docker sandbox -> dataset.

The model is a real HTTP server on 127.0.0.1 with scripted replies; the sandbox is real
Docker. One test runs on Ray, the resume test on the local executor (same stages).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest

from pipeline.config import parse_config
from pipeline.run import run_pipeline
from pipeline.stage import FatalStageError
from tests.fake_openai_server import FakeOpenAIServer, Reply

SEED_FILES = {
    "alpha.py": '''
def clamp(value, low, high):
    """Clamp value into [low, high]."""
    if value < low:
        return low
    if value > high:
        return high
    return value
''',
    "beta.py": '''
def chunks(items, size):
    """Split items into lists of at most size."""
    out = []
    for i in range(0, len(items), size):
        out.append(items[i:i + size])
    return out
''',
    "gamma.py": '''
def garble_marker(text):
    """The fake model answers this seed with prose only."""
    words = text.split()
    words.reverse()
    return " ".join(words)
''',
    "delta.py": '''
def wrong_marker(n):
    """The fake model answers this seed with a solution that fails its tests."""
    total = 0
    for i in range(n):
        total += i
    return total
''',
}

GOOD = """### Problem
Write a function `add(a, b)` that returns the sum of `a` and `b` ({tag}).

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

WRONG = GOOD.replace("return a + b", "return a - b")

# A different problem: run-wide dedup must keep it next to GOOD.
OTHER = """### Problem
Given a list of words, return them sorted by length, shortest first, ties alphabetical.

### Solution
```python
def by_length(words):
    return sorted(words, key=lambda w: (len(w), w))
```

### Tests
```python
assert by_length(["ccc", "a", "bb"]) == ["a", "bb", "ccc"]
assert by_length(["b", "a"]) == ["a", "b"]
```
"""


def model(request: dict[str, Any]) -> Reply:
    prompt = request["messages"][-1]["content"]
    if "garble_marker" in prompt:
        return Reply.ok("Sure! Here is a nice problem about strings. I hope it helps.")
    if "wrong_marker" in prompt:
        return Reply.ok(WRONG.format(tag="wrong"))
    text = GOOD.format(tag="clamp") if "def clamp" in prompt else OTHER
    return Reply.ok(text, prompt_tokens=100, completion_tokens=50)


def _config(seed_dir: Path, base_url: str, executor: str) -> Any:
    return parse_config({
        "select": {"enabled": False},  # selection has its own tests
        "decontam": {"enabled": False},  # decontamination has its own tests
        "seeds": {"source": "directory", "path": str(seed_dir), "max_seeds": 10},
        "llm": {"backend": "openai", "base_url": base_url, "model": "fake",
                "max_retries": 1, "backoff_base_s": 0.01, "abort_after_failures": 2,
                "timeout_s": 5},
        "sandbox": {"timeout_s": 10},
        "ray": {"executor": executor},
    })


def write_seeds(root: Path, files: dict[str, str] = SEED_FILES) -> Path:
    """Write seed source files (relative path -> text) under `root`; returns `root`."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text.lstrip())
    return root


@pytest.fixture
def seed_dir(tmp_path: Path) -> Path:
    return write_seeds(tmp_path / "src")


def _check_outputs(out: Path, stats: dict[str, Any]) -> None:
    ds = datasets.load_from_disk(str(out / "dataset"))
    train = datasets.concatenate_datasets(list(ds.values()))  # train and validation
    assert train.num_rows == 2
    row = train[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][0]["content"] == row["instruction"]
    assert row["execution"]["status"] == "passed"
    assert row["execution"]["tests_passed"] == row["execution"]["tests_total"] == 2
    assert row["strategy"] == "oss_instruct" and row["parent_id"] and row["model"] == "fake"
    rejected = datasets.load_from_disk(str(out / "rejected"))
    reasons = sorted(zip(rejected["stage"], rejected["reason"], strict=True))
    assert reasons == [("execute", "exec_failed"), ("oss_instruct", "unparseable")]
    on_disk = json.loads((out / "stats.json").read_text())
    assert on_disk["kept"] == 2 and on_disk["seeds"] == 4 and on_disk["yield"] == 0.5
    assert on_disk["rejected_by_reason"] == {"execute/exec_failed": 1,
                                             "oss_instruct/unparseable": 1}
    assert on_disk["stages"]["oss_instruct"]["in"] == 4
    assert on_disk["stages"]["execute"]["dropped_exec_failed"] == 1
    dedup = on_disk["stages"]["dedup"]
    assert (dedup["in"], dedup["out"], dedup.get("dropped_duplicate", 0)) == (2, 2, 0)
    assert on_disk["tokens"]["oss_instruct_prompt"] >= 200
    assert stats["kept"] == 2


@pytest.mark.docker
@pytest.mark.ray
def test_run_on_ray_writes_dataset_rejected_and_stats(seed_dir, tmp_path, ray_session) -> None:
    with FakeOpenAIServer(handler=model) as srv:
        out = tmp_path / "out"
        stats = run_pipeline(_config(seed_dir, srv.base_url, "ray"), out)
    _check_outputs(out, stats)


@pytest.mark.docker
def test_dead_server_stops_run_and_rerun_resumes_from_cache(seed_dir, tmp_path) -> None:
    out = tmp_path / "out"
    calls = {"n": 0}

    def dies_after_two(request: dict[str, Any]) -> Reply:
        calls["n"] += 1
        if calls["n"] > 2:
            srv.kill()
            return Reply.hang_forever()
        return model(request)

    with FakeOpenAIServer(handler=dies_after_two) as srv:
        cfg = _config(seed_dir, srv.base_url, "local")
        with pytest.raises(FatalStageError, match="unreachable"):
            run_pipeline(cfg, out)
    with FakeOpenAIServer(handler=model) as srv2:
        stats = run_pipeline(_config(seed_dir, srv2.base_url, "local"), out)
        # the two replies that arrived before the crash came from the cache
        assert len(srv2.requests) == 2
    _check_outputs(out, stats)


@pytest.mark.docker
def test_cli_exits_3_when_some_samples_never_reached_the_server(seed_dir, tmp_path) -> None:
    """Fewer failures than llm.abort_after_failures: the run finishes, but it must not call
    an incomplete dataset a success; the rerun fills the gap."""
    import subprocess
    import sys

    import yaml

    def one_hangs(request: dict[str, Any]) -> Reply:
        if "def chunks" in request["messages"][-1]["content"]:
            return Reply.hang_forever()
        return model(request)

    out = tmp_path / "out"
    conf = tmp_path / "c.yaml"

    def run(base_url: str) -> subprocess.CompletedProcess[str]:
        cfg = _config(seed_dir, base_url, "local").model_dump(mode="json")
        cfg["llm"].update(timeout_s=2, max_retries=0, abort_after_failures=16)
        conf.write_text(yaml.safe_dump(cfg))
        return subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", str(conf),
                               "--output", str(out)], capture_output=True, text=True,
                              timeout=600)

    with FakeOpenAIServer(handler=one_hangs) as srv:
        first = run(srv.base_url)
    assert first.returncode == 3, first.stderr[-2000:]
    assert "1 sample(s) could not reach the model server" in first.stderr
    assert f"resume: python -m pipeline run --config {conf} --output {out}" in first.stderr
    with FakeOpenAIServer(handler=model) as srv:
        second = run(srv.base_url)
        assert len(srv.requests) == 1  # only the missing one
    assert second.returncode == 0, second.stderr[-2000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == 2 and "oss_instruct/llm_unreachable" not in stats["rejected_by_reason"]
