"""The nightly build as a Ray job: `ray job submit` to a real local cluster (`ray start
--head`), the run joins that cluster through RAY_ADDRESS and writes its dataset.

The cluster is this test's own (its own ports and temp dir) and is taken down at the end,
process tree included; nothing else on the machine is touched (no `ray stop`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.fake_openai_server import FakeOpenAIServer
from tests.procs import processes_naming
from tests.test_run_e2e import _config, model, write_seeds

pytestmark = [pytest.mark.docker, pytest.mark.ray, pytest.mark.slow]

RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _take_down(head: subprocess.Popen[bytes], temp_dir: str) -> None:
    procs = []
    with contextlib.suppress(psutil.Error):
        procs = psutil.Process(head.pid).children(recursive=True)
    procs += processes_naming(temp_dir)
    for p in [*procs, psutil.Process(head.pid)]:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGKILL)
    head.wait(timeout=30)


def test_ray_job_submit_runs_the_build_on_the_cluster(tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "src")
    gcs, dash, agent = _free_port(), _free_port(), _free_port()
    temp_dir = f"/tmp/pl-job-{os.getpid()}"
    # Token authentication on both sides (Ray's secure default for a cluster; the token is
    # ~/.ray/auth_token, generated on first use), as a real nightly cluster would run.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         # the agent's default port (52365) may belong to another Ray on this machine
         f"--dashboard-agent-listen-port={agent}",
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        stdout=(tmp_path / "head.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True, env=env)
    try:
        with FakeOpenAIServer(handler=model) as srv:
            conf, out = tmp_path / "c.yaml", tmp_path / "out"
            cfg = _config(seeds, srv.base_url, "ray").model_dump(mode="json")
            conf.write_text(yaml.safe_dump(cfg))
            submit = [str(RAY), "job", "submit", "--address", f"http://127.0.0.1:{dash}",
                      "--", sys.executable, "-m", "pipeline", "run", "--config", str(conf),
                      "--output", str(out)]
            deadline = time.monotonic() + 120
            while True:  # the job server answers a little after the head is up
                r = subprocess.run(submit, capture_output=True, text=True, env=env,
                                   timeout=600)
                starting = ("Failed to connect", "No available agent")
                if r.returncode == 0 or time.monotonic() > deadline or \
                        not any(m in r.stdout + r.stderr for m in starting):
                    break
                time.sleep(2)
            assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
            assert len(srv.requests) == 4
        assert "succeeded" in r.stdout
        assert "Started a local Ray instance" not in r.stdout  # it joined the cluster
        stats = json.loads((out / "stats.json").read_text())
        assert stats["kept"] == 2 and stats["executor"] == "ray"
    finally:
        _take_down(head, temp_dir)
