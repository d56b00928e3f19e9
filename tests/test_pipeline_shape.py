"""The stage list is the whole pipeline: the same replies give the same dataset on the
local executor and on Ray with several LLM and sandbox actors; global steps see every
actor's samples (no Self-Instruct duplicate is solved); every stage's counters add up;
teardown runs on Ray (no sandbox container outlives the run)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import datasets
import pytest

from pipeline.config import parse_config
from pipeline.run import run_pipeline
from pipeline.sandbox.docker_backend import LABEL
from tests.fake_openai_server import FakeOpenAIServer, Reply
from tests.test_strategies_e2e import NEW_TASKS, model

pytestmark = [pytest.mark.docker]

STRATEGIES = ["oss_instruct", "self_instruct", "evol_instruct", "case2code"]


def _config(src: Path, base_url: str, executor: str, **ray: Any) -> Any:
    return parse_config({
        "select": {"enabled": False},  # selection has its own tests
        "decontam": {"enabled": False},  # decontamination has its own tests
        # The fake model answers different tasks with the same code: code dedup would drop
        # them across strategies (it has its own tests).
        "dedup": {"exact": False, "minhash_threshold": None},
        "seeds": {"source": "directory", "path": str(src), "max_seeds": 1},
        "llm": {"backend": "openai", "base_url": base_url, "model": "fake",
                "max_retries": 0, "timeout_s": 20, "max_in_flight": 2},
        "generation": {
            "strategies": STRATEGIES, "solutions_per_instruction": 2,
            "self_instruct": {"num_seeds": 1, "target": 2, "rounds": 2},
            "evol": {"num_seeds": 2, "rounds": 2, "operators": ["add_constraints", "breadth"]},
            "case2code": {"num_seeds": 1}},
        "transform": {"enabled": True, "variants_per_sample": 3},
        "ray": {"executor": executor, **ray},
    })


def _src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "a.py").write_text("def clamp(v, lo, hi):\n    if v < lo:\n        return lo\n"
                              "    return min(v, hi)\n")
    return src


def _rows(out: Path) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    ds = datasets.load_from_disk(str(out / "dataset"))
    train = datasets.concatenate_datasets(list(ds.values()))  # train and validation
    rows = []
    for r in train:
        r = dict(r)
        r["execution"] = {k: v for k, v in (r["execution"] or {}).items() if k != "duration_s"}
        rows.append(r)
    rej = datasets.load_from_disk(str(out / "rejected"))
    return rows, sorted(zip(rej["id"], rej["stage"], rej["reason"], strict=True))


def _check_counters(stats: dict[str, Any]) -> None:
    for name, c in stats["stages"].items():
        drops = sum(v for k, v in c.items() if k.startswith("dropped_"))
        assert c["in"] == c["out"] + drops, name
        assert c["in"] == c["received"] - c["consumed"] + c["created"], name
        assert c.get("returned_foreign_rejects", 0) == 0, name


def _containers() -> list[str]:
    r = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={LABEL}"],
                       capture_output=True, text=True, check=True)
    return r.stdout.split()


@pytest.mark.ray
def test_ray_with_two_llm_and_two_sandbox_actors_matches_local(tmp_path: Path,
                                                                ray_session) -> None:
    src = _src(tmp_path)
    before = set(_containers())
    with FakeOpenAIServer(handler=model, latency_s=0.05) as srv:
        local = run_pipeline(_config(src, srv.base_url, "local"), tmp_path / "local")
    with FakeOpenAIServer(handler=model, latency_s=0.05) as srv:
        ray = run_pipeline(_config(src, srv.base_url, "ray", llm_actors=2, sandbox_actors=2),
                           tmp_path / "ray")
    # teardown ran in the actors: no sandbox container of this run is left
    deadline = time.monotonic() + 20
    while set(_containers()) - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not set(_containers()) - before
    local_rows, local_rej = _rows(tmp_path / "local")
    ray_rows, ray_rej = _rows(tmp_path / "ray")
    assert len(local_rows) >= 10
    assert ray_rows == local_rows and ray_rej == local_rej
    assert {r["kind"] for r in local_rows} >= {None, "refactor"}
    assert {r["strategy"] for r in local_rows} >= set(STRATEGIES)
    # every kept variant's original is kept too
    kept = {r["id"] for r in local_rows}
    assert all(r["parent_id"] in kept for r in local_rows if r["kind"] is not None)
    for stats in (local, ray):
        _check_counters(stats)
        assert stats["stage_order"][-3:] == ["dedup", "transform", "variant_gate"]
    assert {k: v for k, v in ray["by_strategy"].items()} == local["by_strategy"]
    on_disk = json.loads((tmp_path / "ray" / "stats.json").read_text())
    assert on_disk["stages"]["transform"]["created"] > 0


@pytest.mark.ray
def test_self_instruct_sends_no_solve_request_for_another_actors_task(
        tmp_path: Path, ray_session, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two seed slots on two LLM actors; every reply proposes the same new task, so each
    actor accepts it into its own pool. The novelty step between the actors and the solve
    stage keeps one: the server sees solve requests for that one instruction only."""
    task = NEW_TASKS["triple"][0]

    def handler(body: dict[str, Any]) -> Reply:
        prompt = body["messages"][-1]["content"]
        if prompt.startswith("Solve this Python programming task:"):
            code, tests = NEW_TASKS["triple"][1:]
            return Reply(text=f"### Solution\n```python\n{code}\n```\n\n### Tests\n"
                              f"```python\n{tests}\n```\n")
        return Reply(text=task)

    cfg = parse_config({
        "select": {"enabled": False},  # selection has its own tests
        "decontam": {"enabled": False},  # decontamination has its own tests
        # The fake model answers different tasks with the same code: code dedup would drop
        # them across strategies (it has its own tests).
        "dedup": {"exact": False, "minhash_threshold": None},
        "llm": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "fake",
                "max_retries": 0, "timeout_s": 20, "max_in_flight": 1},
        "generation": {"strategies": ["self_instruct"], "solutions_per_instruction": 2,
                       "dedup_threshold": None,
                       "self_instruct": {"num_seeds": 2, "rounds": 1}},
        "ray": {"executor": "ray", "llm_actors": 2, "llm_waves_per_batch": 1},
    })
    # Both LLM actors up before the first batch is handed out: on a busy machine the first
    # one could otherwise finish its slot and take the second before the other has started.
    monkeypatch.setattr(ray_session.data.DataContext.get_current(), "wait_for_min_actors_s",
                        300)
    with FakeOpenAIServer(handler=handler, latency_s=1.0) as srv:
        cfg.llm.base_url = srv.base_url
        stats = run_pipeline(cfg, tmp_path / "out")
        solve = [r for r in srv.requests if r["messages"][-1]["content"].startswith("Solve")]
    st = stats["stages"]
    # both actors accepted the task (each pool saw it once), so it reached the step twice
    assert st["self_instruct"]["novel"] == 2, "the two slots did not run on two actors"
    assert st["self_instruct_novelty"]["dropped_duplicate"] == 1
    assert len(solve) == 2 and st["solve"]["received"] == 1
    assert stats["kept"] == 1
    _check_counters(stats)
