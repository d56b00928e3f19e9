"""A slow model is not a stalled run; a run where nothing finishes stops with the fix.

Real runs on Ray (fake OpenAI server on 127.0.0.1, Docker sandbox) with a short
`ray.stall_timeout_s`: one LLM batch that takes longer than the timeout while its requests
keep being answered finishes; a server that never answers stops the run with RunStalled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.executor.watchdog import RunStalled
from pipeline.run import run_pipeline
from tests.fake_openai_server import FakeOpenAIServer, Reply
from tests.test_run_e2e import _config, model, write_seeds

pytestmark = [pytest.mark.docker, pytest.mark.ray]

STALL_S = 6.0


def _stall_config(seed_dir: Path, base_url: str, llm_timeout_s: float) -> Any:
    cfg = _config(seed_dir, base_url, "ray")
    llm = cfg.llm.model_copy(update={"max_in_flight": 1, "timeout_s": llm_timeout_s,
                                     "max_retries": 0})
    # One batch of all four seeds, one request at a time: the batch is one Ray Data task.
    ray = cfg.ray.model_copy(update={"stall_timeout_s": STALL_S, "llm_waves_per_batch": 4})
    return cfg.model_copy(update={"llm": llm, "ray": ray})


def test_a_batch_longer_than_the_stall_timeout_is_not_a_stall(tmp_path, ray_session) -> None:
    def slow(request: dict[str, Any]) -> Reply:
        reply = model(request)
        reply.delay_s = 4.0
        return reply

    with FakeOpenAIServer(handler=slow) as srv:
        cfg = _stall_config(write_seeds(tmp_path / "src"), srv.base_url, 30)
        stats = run_pipeline(cfg, tmp_path / "o")
    assert stats["stages"]["oss_instruct"]["seconds"] > 2 * STALL_S  # the batch outlasted it
    assert stats["kept"] == 2


def test_nothing_answered_for_the_stall_timeout_stops_the_run(tmp_path, ray_session) -> None:
    with FakeOpenAIServer(handler=lambda _req: Reply.hang_forever()) as srv, \
            pytest.raises(RunStalled, match=r"no request answered and no batch finished for "
                          r"\d+ s \(ray.stall_timeout_s = 6\)"):
        cfg = _stall_config(write_seeds(tmp_path / "src"), srv.base_url, 600)
        run_pipeline(cfg, tmp_path / "o")
