"""docker-compose.yml, checked by a real compose tool (Debian's docker-compose, or the
`docker compose` plugin where that is what the machine has)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if shutil.which("docker") and probe.returncode == 0:
        return ["docker", "compose"]
    pytest.fail("no compose tool: scripts/setup.sh installs Debian's docker-compose")


def _config(*args: str, **env: str) -> dict:
    r = subprocess.run([*_compose(), "-f", str(ROOT / "docker-compose.yml"), *args, "config"],
                       capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "COMPOSE_PROJECT_NAME": "pipeline", **env})
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


@pytest.mark.docker
def test_compose_file_is_valid_and_keeps_the_gpu_service() -> None:
    cfg = _config()
    assert set(cfg["services"]) == {"vllm", "sandbox-image"}
    assert cfg["services"]["sandbox-image"]["profiles"] == ["build"]  # kept out of `up`
    assert "profiles" not in cfg["services"]["vllm"]
    vllm = cfg["services"]["vllm"]
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert "/health" in " ".join(vllm["healthcheck"]["test"])
    command = vllm["command"]
    words = command.split() if isinstance(command, str) else command
    assert words[:2] == ["--model", "Qwen/Qwen2.5-Coder-7B-Instruct"]


@pytest.mark.docker
def test_compose_takes_its_settings_from_the_environment() -> None:
    cfg = _config(VLLM_MODEL="Org/M", VLLM_ARGS="--max-model-len 4096 --dtype half",
                  VLLM_PORT="9001")
    vllm = cfg["services"]["vllm"]
    command = vllm["command"]
    words = command.split() if isinstance(command, str) else command
    assert words == ["--model", "Org/M", "--port", "8000", "--max-model-len", "4096",
                     "--dtype", "half"]
    published = vllm["ports"][0]
    assert "9001" in str(published)
    build = _config("--profile", "build")["services"]["sandbox-image"]
    assert build["image"] == "pipeline-sandbox:2" and build["network_mode"] == "none"
