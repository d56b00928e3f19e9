"""`run --extend PREVIOUS` does only the new work; `run --dry-run` says what would be redone.

Real runs (fake OpenAI server on 127.0.0.1, real Docker sandbox, local executor): a second
build with one more seed, extending the first, sends one request and runs one sample, and
its dataset holds the old rows and the new one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import pytest

from pipeline.config import parse_config
from pipeline.run import dry_run, run_pipeline
from tests.fake_openai_server import FakeOpenAIServer, Reply
from tests.test_run_e2e import model, write_seeds

pytestmark = pytest.mark.docker

NEW_SEED = '''
def epsilon_marker(values):
    """The new seed of the second build."""
    seen = set()
    out = []
    for v in values:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out
'''

NEW_TASK = """### Problem
Remove repeated items from a list, keeping the first occurrence of each, in order.

### Solution
```python
def unique_in_order(items):
    seen, out = set(), []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
```

### Tests
```python
assert unique_in_order([3, 1, 3, 2, 1]) == [3, 1, 2]
assert unique_in_order([]) == []
```
"""


def handler(request: dict[str, Any]) -> Reply:
    if "epsilon_marker" in request["messages"][-1]["content"]:
        return Reply.ok(NEW_TASK)
    return model(request)


def _config(seed_dir: Path, base_url: str, **llm: Any) -> Any:
    return parse_config({
        "select": {"enabled": False},
        "decontam": {"enabled": False},
        "seeds": {"source": "directory", "path": str(seed_dir), "max_seeds": 10},
        "llm": {"backend": "openai", "base_url": base_url, "model": "fake", "max_retries": 1,
                "backoff_base_s": 0.01, "timeout_s": 5, **llm},
        "ray": {"executor": "local"},
    })


def _executions(audit: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in audit.glob("*.log"))


def test_extend_sends_only_the_new_requests_and_keeps_the_old_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seeds = write_seeds(tmp_path / "src")
    audit = tmp_path / "audit"
    monkeypatch.setenv("PIPELINE_SANDBOX_AUDIT", str(audit))

    first, second = tmp_path / "runs" / "d1", tmp_path / "runs" / "d2"
    with FakeOpenAIServer(handler=handler) as srv:
        run_pipeline(_config(seeds, srv.base_url), first)
        assert len(srv.requests) == 4
    old_rows = [{**r, "split": name}  # a row's split is part of what must come back
                for name, d in datasets.load_from_disk(str(first / "dataset")).items()
                for r in d.to_list()]
    old_execs = _executions(audit)
    assert len(old_rows) == 2 and old_execs == 3

    (seeds / "epsilon.py").write_text(NEW_SEED.lstrip())
    with FakeOpenAIServer(handler=handler) as srv:
        cfg = _config(seeds, srv.base_url)
        plan = "\n".join(dry_run(cfg, second, extend=first))
        assert "sources: 5 (1 new, 0 no longer present, 4 reused)" in plan
        assert "oss_instruct: unchanged: reused, plus the new sources" in plan
        assert srv.requests == []  # a dry run sends nothing
        stats = run_pipeline(cfg, second, extend=first)
        sent = [r["messages"][-1]["content"] for r in srv.requests]
    assert len(sent) == 1 and "epsilon_marker" in sent[0]
    assert _executions(audit) - old_execs == 1  # only the new sample ran
    rows = [{**r, "split": name}
            for name, d in datasets.load_from_disk(str(second / "dataset")).items()
            for r in d.to_list()]
    assert len(rows) == 3 and stats["kept"] == 3 and stats["extends"] == str(first)
    new = [r for r in rows if r["id"] not in {o["id"] for o in old_rows}]
    assert [r["instruction"] for r in new] == [NEW_TASK.split("\n")[1]]
    for old in old_rows:  # the old rows come back as they were, not twice
        twin = [r for r in rows if r["id"] == old["id"]]
        assert len(twin) == 1
        assert {k: v for k, v in twin[0].items() if k != "execution"} == \
            {k: v for k, v in old.items() if k != "execution"}


def test_dry_run_names_the_changed_setting(tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "src")
    out = tmp_path / "out"
    with FakeOpenAIServer(handler=handler) as srv:
        run_pipeline(_config(seeds, srv.base_url), out)
        same = dry_run(_config(seeds, srv.base_url), out)
        hotter = dry_run(_config(seeds, srv.base_url, temperature=1.1), out)
    assert all("REDONE" not in line for line in same), same
    changed = [line for line in hotter if "REDONE" in line]
    assert changed and changed[0].strip().startswith("oss_instruct: REDONE")
    assert "cfg.temperature" in changed[0] and "-> 1.1" in changed[0]
    # stages after it redo only what the change alters
    assert any("execute: unchanged; redone only for samples" in line for line in hotter)


def test_extend_must_not_be_the_output_itself(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pipeline", "run", "--output", str(tmp_path),
                        "--extend", str(tmp_path), "--dry-run"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "--extend must name an earlier run's output" in r.stderr
