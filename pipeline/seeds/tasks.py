"""Seed coding tasks for Self-Instruct, Evol-Instruct and Case2Code: data/seed_tasks.jsonl.

Each line is `{"id", "instruction", "solution", "tests", "topic", "difficulty"}`: a
human-checked task whose solution passes its tests. `task_samples` turns the first
`limit` of them into round-0 source samples of one strategy; the strategy's first stage
consumes them (seeds are the pool, not the dataset).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.record import Sample

#: The bundled pool, used when `generation.seed_tasks` is not set.
DEFAULT_SEED_TASKS = Path(__file__).resolve().parent.parent.parent / "data" / "seed_tasks.jsonl"
_FIELDS = ("id", "instruction", "solution", "tests")


@dataclass(frozen=True)
class SeedTask:
    """One seed task of the pool."""

    id: str
    instruction: str
    solution: str
    tests: str
    topic: str = ""
    difficulty: str = ""


def load_seed_tasks(path: str | Path | None = None) -> list[SeedTask]:
    """The tasks of a seed JSONL file, in file order; errors name the line and the fix."""
    p = Path(path) if path else DEFAULT_SEED_TASKS
    if not p.is_file():
        raise FileNotFoundError(f"seed tasks file not found: {p} (set generation.seed_tasks "
                                "to a JSONL file of {id, instruction, solution, tests})")
    tasks: list[SeedTask] = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}:{n}: not valid JSON: {exc}") from None
        missing = [f for f in _FIELDS if not isinstance(row.get(f), str) or not row[f].strip()]
        if missing:
            raise ValueError(f"{p}:{n}: missing or empty field(s) {missing}")
        tasks.append(SeedTask(row["id"], row["instruction"].strip(), row["solution"].strip(),
                              row["tests"].strip(), str(row.get("topic", "")),
                              str(row.get("difficulty", ""))))
    return tasks


#: Fields that seed-task source samples carry besides `pipeline.run.SOURCE_FIELDS`.
TASK_SOURCE_FIELDS = frozenset({"instruction", "code", "tests", "round"})


def task_samples(tasks: list[SeedTask], strategy: str, limit: int | None = None) -> list[Sample]:
    """Round-0 source samples of `strategy` for the first `limit` tasks (all if None)."""
    out = []
    for task in tasks[:limit]:
        s = Sample(strategy=strategy, seed_ref=f"seed_tasks:{task.id}", round=0,
                   instruction=task.instruction, code=task.solution, tests=task.tests)
        s.assign_id()
        out.append(s)
    return out
