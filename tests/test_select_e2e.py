"""Scoring and selection inside a run (fake OpenAI server, real sandbox, real SmolLM2
scorer), then `pipeline select` redoing the cut from the run's candidates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml

from pipeline.config import parse_config
from pipeline.run import run_pipeline
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_run_e2e import model, write_seeds

pytestmark = [pytest.mark.docker, pytest.mark.model, pytest.mark.slow]


def _cfg(seed_dir: Path, base_url: str) -> dict:
    return {
        "seeds": {"source": "directory", "path": str(seed_dir), "max_seeds": 10},
        "llm": {"backend": "openai", "base_url": base_url, "model": "fake", "max_retries": 1,
                "backoff_base_s": 0.01, "timeout_s": 5},
        "ray": {"executor": "local"},
        # The fake model's add(a, b) is HumanEval/53: decontamination has its own tests.
        "decontam": {"enabled": False},
        "select": {"policy": "max_loss", "keep": 1, "group_by": "none",
                   "scorer": {"model": "smollm2-135m", "threads": 2}},
    }


def test_run_selects_by_loss_and_select_cli_redoes_the_cut(tmp_path: Path) -> None:
    seed_dir = write_seeds(tmp_path / "src")
    out = tmp_path / "run"
    with FakeOpenAIServer(handler=model) as srv:
        raw = _cfg(seed_dir, srv.base_url)
        stats = run_pipeline(parse_config(raw), out)
    assert stats["stage_order"][-2:] == ["score", "select"]
    assert stats["kept"] == 1 and stats["rejected_by_reason"]["select/not_selected"] == 1
    sel = stats["stages"]["select"]
    assert sel["funnel"]["all"]["scored"] == 2 and sel["funnel"]["all"]["selected"] == 1
    ds = datasets.load_from_disk(str(out / "dataset"))
    kept = datasets.concatenate_datasets(list(ds.values()))[0]  # train or validation
    rej = datasets.load_from_disk(str(out / "rejected"))
    dropped = [r for r in rej if r["reason"] == "not_selected"][0]
    loss_of = {s["name"]: s["value"] for s in dropped["scores"]}
    assert kept["loss"] > loss_of["loss"]  # max_loss kept the harder one
    assert kept["ifd"] == pytest.approx(kept["loss"] / kept["loss_alone"])
    assert "rank 2 of 2" in dropped["detail"]
    cands = (out / "candidates.jsonl").read_text().splitlines()
    assert len(cands) == 2

    def select(cfg: dict, dest: Path) -> dict:
        path = tmp_path / f"{dest.name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        r = subprocess.run([sys.executable, "-m", "pipeline", "select", "--from", str(out),
                            "--output", str(dest), "--config", str(path)],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads((dest / "stats.json").read_text())

    same_scorer = {**raw, "select": {**raw["select"], "policy": "min_loss"}}
    s2 = select(same_scorer, tmp_path / "min")
    assert s2["scores_reused"] and s2["stages"]["score"]["reused"] == 2
    ds = datasets.load_from_disk(str(tmp_path / "min" / "dataset"))
    flipped = datasets.concatenate_datasets(list(ds.values()))[0]  # train or validation
    assert flipped["id"] == dropped["id"]  # min_loss keeps the other one

    other = {**raw, "select": {**raw["select"], "keep": 1.0,
                               "scorer": {"model": "smollm2-135m", "threads": 2,
                                          "max_tokens": 1024}}}
    s3 = select(other, tmp_path / "all")
    assert not s3["scores_reused"] and s3["stages"]["score"]["scored"] == 2
    assert s3["kept"] == 2
