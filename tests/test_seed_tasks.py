"""data/seed_tasks.jsonl: the Self-Instruct seed pool is well-formed, varied and correct.

The well-formedness checks run everywhere; the reference solutions are run against their
tests in the real sandbox under the `docker` marker.
"""

from __future__ import annotations

import ast
import json
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import SandboxConfig
from pipeline.novelty import NoveltyIndex
from pipeline.sandbox import run_records

SEEDS = Path(__file__).resolve().parent.parent / "data" / "seed_tasks.jsonl"
FIELDS = {"id", "instruction", "solution", "tests", "topic", "difficulty"}


def _load() -> list[dict]:
    return [json.loads(line) for line in SEEDS.read_text(encoding="utf-8").splitlines()
            if line.strip()]


TASKS = _load()


def test_enough_tasks_with_unique_ids_and_exact_fields() -> None:
    assert len(TASKS) >= 50
    ids = [t["id"] for t in TASKS]
    assert len(set(ids)) == len(ids), [i for i, n in Counter(ids).items() if n > 1]
    for t in TASKS:
        assert set(t) == FIELDS, t.get("id")
        assert all(isinstance(t[f], str) and t[f].strip() for f in FIELDS), t["id"]


def test_varied_in_topic_and_difficulty() -> None:
    topics = Counter(t["topic"] for t in TASKS)
    levels = Counter(t["difficulty"] for t in TASKS)
    assert set(levels) == {"easy", "medium", "hard"}
    assert min(levels.values()) >= 5, levels
    assert len(topics) >= 10, topics
    assert max(topics.values()) <= len(TASKS) // 5, topics


def test_instructions_are_pairwise_novel() -> None:
    index = NoveltyIndex(threshold=0.7)
    for t in TASKS:
        score, other = index.max_similarity(t["instruction"])
        assert score < 0.7, (t["id"], TASKS[other]["id"] if other is not None else None)
        index.add(t["instruction"])


@pytest.mark.parametrize("task", TASKS, ids=[t["id"] for t in TASKS])
def test_solution_and_tests_parse_and_tests_assert(task: dict) -> None:
    ast.parse(task["solution"])
    tree = ast.parse(task["tests"])
    asserts = [n for n in tree.body if isinstance(n, ast.Assert)]
    assert asserts, "tests need top-level assert statements"
    defined = {n.name for n in ast.parse(task["solution"]).body
               if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    called = {n.func.id for n in ast.walk(tree)
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert defined & called, "tests must call what the solution defines"
    # The instruction names the entry point, so a generated task can be checked the same way.
    assert any(name in task["instruction"] for name in defined & called)


@pytest.mark.docker
def test_every_reference_solution_passes_in_the_sandbox() -> None:
    records = [{"id": t["id"], "code": t["solution"], "tests": t["tests"]} for t in TASKS]
    results = list(run_records(SandboxConfig(backend="docker"), records))
    bad = {r["id"]: (r["status"], r["stderr"][-500:]) for r in results
           if r["status"] != "passed" or r["tests_passed"] != r["tests_total"]}
    assert not bad
    assert len(results) == len(TASKS)
    assert all(r["tests_total"] >= 3 for r in results)
