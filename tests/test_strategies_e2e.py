"""All four strategies in one run: seeds -> fake OpenAI server -> Docker sandbox -> dataset.

The fake model answers each prompt kind (OSS-Instruct, Self-Instruct, Evol-Instruct,
solve, Case2Code) with a scripted reply; solutions for seed-task functions are the seeds'
own, so they pass. Checks that stats.json counts generated, parsed, novel and verified
per strategy and that lineage reaches the dataset.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import datasets
import pytest

from pipeline.codecheck import top_level_names
from pipeline.config import parse_config
from pipeline.run import run_pipeline
from pipeline.seeds.tasks import load_seed_tasks
from tests.fake_openai_server import FakeOpenAIServer, Reply

pytestmark = pytest.mark.docker

SEEDS = {min(top_level_names(t.solution)): t for t in load_seed_tasks()}
OSS = ("### Problem\nWrite `add(a, b)` returning the sum.\n\n### Solution\n```python\n"
       "def add(a, b):\n    return a + b\n```\n\n### Tests\n```python\n"
       "assert add(1, 2) == 3\nassert add(0, 0) == 0\nassert add(-1, 1) == 0\n```\n")
NEW_TASKS = {
    "triple": ("Write a function `triple(x)` that returns three times the number x, for "
               "ints and floats alike.", "def triple(x):\n    return 3 * x",
               "assert triple(2) == 6\nassert triple(0) == 0\nassert triple(-1) == -3"),
    "shout": ("Implement `shout(text)` which upper-cases a string and appends one "
              "exclamation mark to it.", "def shout(text):\n    return text.upper() + '!'",
              "assert shout('hi') == 'HI!'\nassert shout('') == '!'\n"
              "assert shout('a b') == 'A B!'"),
}


def _solution(name: str) -> tuple[str, str]:
    if name == "add":
        return "def add(a, b):\n    return a + b", ""
    if name in NEW_TASKS:
        return NEW_TASKS[name][1], NEW_TASKS[name][2]
    return SEEDS[name].solution, SEEDS[name].tests


def model(body: dict[str, Any]) -> Reply:
    prompt = body["messages"][-1]["content"]
    if prompt.startswith("Here is a code snippet"):
        return Reply(text=OSS)
    if body["messages"][0]["content"].startswith("You write short Python programming "
                                                  "exercises"):  # the few-shot dialogue
        tasks = [SEEDS["caesar_shift"].instruction] + [t[0] for t in NEW_TASKS.values()]
        return Reply(text="\n".join(f"Task {i}: {t}" for i, t in enumerate(tasks, 5)))
    if prompt.startswith("Original question:"):
        question = prompt.split("Original question:\n", 1)[1].split("\n\n")[0]
        return Reply(text=f"New question: {question} Also reject inputs of the wrong type "
                          "by raising TypeError with a clear message.")
    if prompt.startswith("Given question:"):
        return Reply(text=f"New question: {NEW_TASKS['shout'][0]}")
    if prompt.startswith("Solve this Python programming task:"):
        name = next(n for n in [*NEW_TASKS, *SEEDS] if f"`{n}" in prompt)
        code, tests = _solution(name)
        return Reply(text=f"### Solution\n```python\n{code}\n```\n\n### Tests\n"
                          f"```python\n{tests}\n```\n")
    if prompt.startswith("Here are calls of a Python function"):
        name = re.search(r"function `(\w+)`", prompt).group(1)
        return Reply(text=f"```python\n{_solution(name)[0]}\n```")
    return Reply(text="?")


def test_all_four_strategies_local(tmp_path: Path) -> None:
    _all_four(tmp_path, "local")


@pytest.mark.ray
def test_all_four_strategies_on_ray(tmp_path: Path, ray_session) -> None:
    """Same run on Ray: the stages are pickled into actors, the novelty pool lives in one."""
    _all_four(tmp_path, "ray")


def _all_four(tmp_path: Path, executor: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("def clamp(v, lo, hi):\n    if v < lo:\n        return lo\n"
                              "    return min(v, hi)\n")
    with FakeOpenAIServer(handler=model) as srv:
        cfg = parse_config({
        "select": {"enabled": False},  # selection has its own tests
        "decontam": {"enabled": False},  # decontamination has its own tests
        # The fake model answers different tasks with the same code: code dedup would drop
        # them across strategies (it has its own tests).
        "dedup": {"exact": False, "minhash_threshold": None},
            "seeds": {"source": "directory", "path": str(src), "max_seeds": 1},
            "llm": {"backend": "openai", "base_url": srv.base_url, "model": "fake",
                    "max_retries": 0, "timeout_s": 10},
            "generation": {
                # The fake model's replies repeat one problem; run-wide dedup is pinned in
                # test_dedup.py and test_run_e2e.py, this test pins per-strategy counts.
                "dedup_threshold": None,
                "strategies": ["oss_instruct", "self_instruct", "evol_instruct", "case2code"],
                "solutions_per_instruction": 2,
                "self_instruct": {"num_seeds": 1, "target": 2, "rounds": 2},
                "evol": {"num_seeds": 2, "rounds": 2,
                         "operators": ["add_constraints", "breadth"]},
                "case2code": {"num_seeds": 1}},
            "ray": {"executor": executor},
        })
        stats = run_pipeline(cfg, tmp_path / "out")
    on_disk = json.loads((tmp_path / "out" / "stats.json").read_text())
    by = on_disk["by_strategy"]
    assert set(by) == {"oss_instruct", "self_instruct", "evol_instruct", "case2code"}
    # two candidates per instruction; identical replies make identical samples (one kept)
    assert by["self_instruct"] == {"generated": 3, "parsed": 3, "novel": 2, "verified": 2,
                                   "solve_replies": 4, "solve_parsed": 4}
    assert by["oss_instruct"] == {"generated": 1, "parsed": 1, "novel": 1, "verified": 1}
    evol = by["evol_instruct"]
    assert evol["generated"] == evol["parsed"] >= 3 and evol["verified"] >= 2
    assert by["case2code"]["generated"] == by["case2code"]["parsed"] >= 2
    assert by["case2code"]["verified"] == by["case2code"]["generated"]
    assert on_disk["kept_by_strategy"]["self_instruct"] == 2
    stages = on_disk["stages"]
    assert stages["pass_counts"]["pass_rates"]["self_instruct"]["mean_pass_rate"] == 1.0
    assert "dropped_duplicate" not in stages["self_instruct_novelty"]  # one actor, one pool
    for name, c in stages.items():  # every stage's counters add up
        drops = sum(v for k, v in c.items() if k.startswith("dropped_"))
        assert c["in"] == c["out"] + drops, name
        assert c["in"] == c["received"] - c["consumed"] + c["created"], name
    # each stage counts only its own samples: the gate saw oss + solve candidates + seeds
    assert stages["solve"]["received"] == by["self_instruct"]["novel"] + stages[
        "evol_instruct"]["out"]
    assert stages["oss_instruct"]["received"] == 1
    assert on_disk["stage_order"] == [
        "oss_instruct", "self_instruct", "self_instruct_novelty", "evol_instruct", "solve",
        "execute", "pass_counts", "case2code_cases", "case2code_infer", "case2code_check"]
    assert on_disk["rejected_by_reason"] == {"self_instruct/duplicate": 1}
    assert stats["sources"] == {"oss_instruct": 1, "self_instruct": 1, "evol_instruct": 2,
                                "case2code": 1}
    ds = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    train = datasets.concatenate_datasets(list(ds.values()))  # train and validation
    rows = list(train)
    assert {r["strategy"] for r in rows} == set(by)
    evol_rows = [r for r in rows if r["strategy"] == "evol_instruct"]
    assert all(r["op"].startswith("evol:") and r["round"] >= 1 for r in evol_rows)
    assert all(r["execution"]["status"] == "passed" for r in rows)
    c2c = [r for r in rows if r["strategy"] == "case2code"]
    assert all(r["op"] == "case2code" and "Here are calls" in r["instruction"] for r in c2c)
