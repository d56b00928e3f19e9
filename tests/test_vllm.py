"""The production path on real vLLM (the CPU build on machines without a GPU).

One vLLM server is started separately, the way a user runs one beside the pipeline, and
serves SmolLM2-135M converted once from its packaged GGUF. Against it: structured output the
server enforces, many requests in flight, a pipeline run through `llm.backend: openai`, and
a run whose server is killed mid-run. That run is then finished by a rerun through
`llm.backend: vllm`, which launches its own server and must only send the requests the
cache does not hold. Set up with `bash scripts/setup_vllm.sh`; the group is marked `vllm`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml

from pipeline.config import LLMConfig
from pipeline.llm.client import LLMClient
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.llm.server import _answers, _free_port, _stop
from pipeline.llm.vllm import vllm_command
from pipeline.stages.oss_instruct import OSS_INSTRUCT_SCHEMA
from tests.test_run_e2e import SEED_FILES

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MODEL = "smollm2-135m"
SEEDS = SEED_FILES  # four small functions that pass the seed filters


class Server:
    """A vLLM server started apart from the pipeline, in its own process group."""

    def __init__(self, log_path: Path) -> None:
        self.port = _free_port()
        cfg = LLMConfig(backend="vllm", vllm={"model": MODEL})
        argv, self.model, env = vllm_command(cfg, self.port)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         env={**os.environ, **env})
        deadline = time.monotonic() + 900
        while not _answers(f"http://127.0.0.1:{self.port}/health"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"vLLM did not start; see {log_path}:\n"
                                   + log_path.read_text()[-3000:])
            time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL the whole process group (engine workers included), as a crash would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        _stop(self.proc)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        values = [float(m.group(1)) for m in
                  re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
        return sum(values)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = Server(tmp_path_factory.mktemp("vllm") / "vllm-server.log")
    yield srv
    srv.kill()


def _chat(srv: Server, requests: list[dict[str, Any]], max_in_flight: int) -> list[Any]:
    cfg = LLMConfig(backend="openai", base_url=srv.base_url, max_in_flight=max_in_flight,
                    max_tokens=96, temperature=0.7, max_retries=0, timeout_s=600)

    async def go() -> list[Any]:
        client = LLMClient(LLMEndpoint(base_url=srv.base_url, model=srv.model), cfg)
        try:
            return await asyncio.gather(*(client.chat(**r) for r in requests))
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_vllm_enforces_the_json_schema(server: Server) -> None:
    ask = [{"role": "user", "content": "Describe a small Python exercise about lists."}]
    fmt = {"type": "json_schema", "json_schema": {"name": "oss_instruct", "strict": True,
                                                  "schema": OSS_INSTRUCT_SCHEMA}}
    free, *forced = _chat(server, [{"messages": ask, "seed": 1, "max_tokens": 400}]
                          + [{"messages": ask, "seed": s, "max_tokens": 400,
                              "response_format": fmt} for s in range(4)], max_in_flight=8)
    # The unconstrained reply is prose, so the JSON below is the server's doing.
    with pytest.raises(ValueError):
        json.loads(free.text)
    for reply in forced:
        if reply.finish_reason == "length":  # cut off mid-object: not a schema failure
            continue
        obj = json.loads(reply.text)
        assert set(obj) == {"problem", "solution", "tests"}
        assert isinstance(obj["tests"], list) and 1 <= len(obj["tests"]) <= 8
    assert any(r.finish_reason == "stop" for r in forced)


def test_many_requests_are_in_flight_at_once(server: Server) -> None:
    peak = {"running": 0.0}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak["running"] = max(peak["running"], server.metric("vllm:num_requests_running"))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        replies = _chat(server, [{"messages": [{"role": "user", "content": f"Count to {i}."}],
                                  "seed": i, "max_tokens": 48} for i in range(32)],
                        max_in_flight=32)
    finally:
        done.set()
        watcher.join()
    assert len(replies) == 32 and all(r.text for r in replies)
    assert peak["running"] >= 8, f"at most {peak['running']} requests ran at once"


def _config(tmp: Path, llm: dict[str, Any]) -> Path:
    seeds = tmp / "seeds"
    seeds.mkdir(exist_ok=True)
    for name, text in SEEDS.items():
        (seeds / name).write_text(text.lstrip())
    path = tmp / f"config-{llm['backend']}.yaml"
    path.write_text(yaml.safe_dump({
        "seeds": {"source": "directory", "path": str(seeds)},
        "llm": {"max_tokens": 384, "response_format": "json_schema", "max_in_flight": 8,
                "max_retries": 1, "backoff_base_s": 0.1, "abort_after_failures": 2,
                "timeout_s": 600, **llm},
        "ray": {"executor": "local"},
        "select": {"enabled": False},
        "decontam": {"enabled": False},
    }))
    return path


def _run(config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", str(config),
                           "--output", str(out)], capture_output=True, text=True, timeout=1500)


def _check_dataset(out: Path) -> dict[str, Any]:
    stats = json.loads((out / "stats.json").read_text())
    kept = sum(d.num_rows for d in datasets.load_from_disk(str(out / "dataset")).values())
    rejected = datasets.load_from_disk(str(out / "rejected"))
    assert kept == stats["kept"] and rejected.num_rows == stats["rejected"]
    assert stats["stages"]["oss_instruct"]["in"] == len(SEEDS)
    assert not [r for r in rejected["reason"] if "unreachable" in r]
    assert stats["tokens"]["oss_instruct_completion"] > 0
    return stats


@pytest.mark.docker
def test_pipeline_through_openai_backend_on_vllm(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = _run(_config(tmp_path, {"backend": "openai", "base_url": server.base_url}), out)
    assert r.returncode == 0, r.stderr[-3000:]
    stats = _check_dataset(out)
    assert stats["kept"] + stats["rejected"] >= len(SEEDS)


def _cached_replies(out: Path) -> int:
    path = out / "llm_cache.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.docker
def test_killed_server_stops_the_run_and_backend_vllm_finishes_it(server: Server,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    # One request at a time, so the kill falls between two replies: some cached, some not.
    first_cfg = _config(tmp_path, {"backend": "openai", "base_url": server.base_url,
                                   "max_in_flight": 1})
    cmd = [sys.executable, "-m", "pipeline", "run", "--output", str(out), "--config",
           str(first_cfg)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 900
    while _cached_replies(out) < 1 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, "the run ended before the server was killed"
    server.kill()
    _, err = first.communicate(timeout=600)
    assert first.returncode == 3, err[-3000:]
    assert "unreachable" in err, err[-3000:]
    assert f"resume: python -m pipeline run --output {out} --config {first_cfg}" in err
    cached = _cached_replies(out)
    assert 1 <= cached < len(SEEDS)

    second = _run(_config(tmp_path, {"backend": "vllm", "vllm": {"model": MODEL}}), out)
    assert second.returncode == 0, second.stderr[-3000:]
    stats = _check_dataset(out)
    log = (out / "vllm-server.log").read_text()
    sent = log.count("POST /v1/chat/completions")
    oss = stats["stages"]["oss_instruct"]
    # Only what the cache did not hold went to the new server.
    assert (oss["requests"], oss.get("cache_hits", 0)) == (len(SEEDS) - cached, cached)
    assert sent == sum(s.get("requests", 0) for s in stats["stages"].values())
    assert _cached_replies(out) == cached + sent
    left = subprocess.run(["pgrep", "-f", "--", f"--served-model-name {MODEL}"],
                          capture_output=True)
    assert left.returncode == 1, "the pipeline left a vLLM process behind"
