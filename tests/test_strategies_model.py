"""Self-Instruct and Evol-Instruct against the real embedded llama.cpp server.

1. The server takes every request these stages send (the few-shot dialogue with a system
   turn, stop sequences, the JSON schemas as `json_object` + schema) in both reply
   formats; SmolLM2-135M keeps that to seconds.
2. The default model, Qwen2.5-Coder-0.5B, turns Self-Instruct seeds into verified samples
   in a real run (embedded server, Docker sandbox): the dialogue prompt's reason to exist.
   With the numbered-list prompt the same model verified none.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import EvolConfig, LLMConfig, SelfInstructConfig, parse_config
from pipeline.record import RejectReason
from pipeline.seeds.tasks import load_seed_tasks, task_samples
from pipeline.stages.evol_instruct import EvolInstructGenerator
from pipeline.stages.self_instruct import SelfInstructGenerator

pytestmark = pytest.mark.model
TASKS = load_seed_tasks()
PARSE_REASONS = {RejectReason.UNPARSEABLE, RejectReason.FILTERED, RejectReason.DUPLICATE}


def test_embedded_server_takes_every_strategy_request(tmp_path: Path) -> None:
    from pipeline.llm.server import start_backend

    cfg = LLMConfig(backend="embedded", max_tokens=160, cache=False, max_retries=0,
                    embedded={"model": "smollm2-135m"})
    with start_backend(cfg, tmp_path) as endpoint:
        for fmt in ("markdown", "json_schema"):
            stage_cfg = cfg.model_copy(update={"response_format": fmt})
            stages = [
                SelfInstructGenerator(endpoint, stage_cfg, None,
                                      SelfInstructConfig(rounds=1, num_seeds=1),
                                      [t.instruction for t in TASKS],
                                      seed=0, seed_topics=[t.topic for t in TASKS]),
                EvolInstructGenerator(endpoint, stage_cfg, None,
                                      EvolConfig(rounds=1, operators=["breadth"]), seed=0),
            ]
            for stage, strategy in zip(stages, ("self_instruct", "evol_instruct"),
                                       strict=True):
                try:
                    out = stage(task_samples(TASKS, strategy, 1))
                finally:
                    stage.teardown()
                assert out, f"{strategy}/{fmt}: no sample"
                assert stage.counters["requests"] == 1
                for s in out:  # parsed or rejected by a parse/filter reason, never LLM errors
                    assert not s.rejected or s.reject_reason in PARSE_REASONS, s.reject_detail


def test_self_instruct_verifies_on_the_default_model(tmp_path: Path) -> None:
    """4 seeds, one round, 3 candidate solutions each: about 16 requests, ~3 minutes."""
    from pipeline.run import run_pipeline

    cfg = parse_config({
        "select": {"enabled": False},  # selection has its own tests
        "decontam": {"enabled": False},  # decontamination has its own tests
        "llm": {"max_tokens": 512},
        "generation": {"strategies": ["self_instruct"], "solutions_per_instruction": 3,
                       "self_instruct": {"num_seeds": 4, "target": 8, "rounds": 1}},
        "ray": {"executor": "local"},
    })
    run_pipeline(cfg, tmp_path / "out")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    row = stats["by_strategy"]["self_instruct"]
    assert row["generated"] >= 4 and row["novel"] >= 3, row
    assert row["verified"] >= 1, (row, stats["rejected_by_reason"])
