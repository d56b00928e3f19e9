"""Model backends: start or reach an OpenAI-compatible server and yield its endpoint.

`start_backend` is the one entry point. `embedded` runs llama.cpp's server (llama-cpp-python)
on 127.0.0.1 with a model shipped through PyPI, `vllm` runs vLLM's OpenAI server from its
own virtualenv (on CPU without a GPU; `pipeline/llm/vllm.py` builds the command), `openai`
only checks that `base_url` answers. A server the pipeline starts runs in its own process group
and is stopped when the context exits: normally, on an exception, on Ctrl-C, and on SIGTERM
to the pipeline (turned into SystemExit while the context is active).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from pipeline.config import LLMConfig
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.llm.models import ModelError, model_file
from pipeline.llm.vllm import VllmSetupError, vllm_command

log = logging.getLogger(__name__)

_LLAMA_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette",
                         "starlette_context", "pydantic_settings")
_STOP_GRACE_S = 10.0
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never proxy 127.0.0.1


class BackendError(RuntimeError):
    """The model backend could not be started or reached. The message says how to fix it."""


@contextlib.contextmanager
def start_backend(cfg: LLMConfig, log_dir: str | Path | None = None) -> Iterator[LLMEndpoint]:
    """Make the configured backend available for the duration of the context.

    Yields the endpoint that clients send requests to. A server started here logs to
    ``<log_dir>/<backend>-server.log`` (a temporary file without `log_dir`; a run passes
    its output directory) and is gone, process group included, once the context exits.
    Raises BackendError.
    """
    if cfg.backend == "openai":
        yield _openai_endpoint(cfg)
        return
    if cfg.backend == "embedded":
        port = _free_port()
        argv, model = _embedded_command(cfg, port)
        timeout_s, setting = cfg.embedded.startup_timeout_s, "llm.embedded.startup_timeout_s"
        health, env = "/v1/models", {}
    else:
        port = cfg.vllm.port or _free_port()
        argv, model, env = _vllm_command(cfg, port)
        timeout_s, setting = cfg.vllm.startup_timeout_s, "llm.vllm.startup_timeout_s"
        health = "/health"
    with _managed_server(argv, name=f"{cfg.backend} server", port=port, health_path=health,
                         timeout_s=timeout_s, timeout_setting=setting,
                         log_path=_log_path(cfg.backend, log_dir), env=env):
        yield LLMEndpoint(base_url=f"http://127.0.0.1:{port}/v1", model=model)


# --- commands -------------------------------------------------------------------------------

def _embedded_command(cfg: LLMConfig, port: int) -> tuple[list[str], str]:
    missing = [m for m in _LLAMA_SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendError(
            f"llm.backend 'embedded' needs llama-cpp-python's server, but {', '.join(missing)} "
            "is not installed — `pip install 'llama-cpp-python[server]'` (or "
            "`pip install '.[embedded]'`), or use llm.backend: openai with a running server")
    emb = cfg.embedded
    if emb.model_path:
        path = Path(emb.model_path).expanduser()
        if not path.is_file():
            raise BackendError(f"llm.embedded.model_path {path} is not a file — point it at a "
                               "GGUF file, or remove it to use llm.embedded.model")
        alias = cfg.model or path.stem
    else:
        try:
            path = model_file(emb.model)
        except ModelError as exc:
            raise BackendError(str(exc)) from None
        alias = cfg.model or emb.model
    threads = str(emb.n_threads or _cpu_count())
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(path),
            "--model_alias", alias, "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", str(emb.n_ctx), "--n_threads", threads, "--n_threads_batch", threads,
            # Default True: a new request cancels a streaming one. The pipeline queues instead.
            "--interrupt_requests", "false"]
    return argv, alias


def _vllm_command(cfg: LLMConfig, port: int) -> tuple[list[str], str, dict[str, str]]:
    if not _port_free(port):
        raise BackendError(f"port {port} on 127.0.0.1 is already in use — set llm.vllm.port to "
                           "a free port (or remove it: a free one is chosen), or stop the "
                           "server using it (if it is a vLLM server you started, use "
                           "llm.backend: openai with its base_url)")
    try:
        return vllm_command(cfg, port)
    except VllmSetupError as exc:
        raise BackendError(str(exc)) from None


# --- the process ----------------------------------------------------------------------------

def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _managed_server(argv: list[str], *, name: str, port: int, health_path: str,
                    timeout_s: float, timeout_setting: str, log_path: Path,
                    env: dict[str, str] | None = None) -> Iterator[None]:
    """Run `argv` in its own process group until the context exits; wait for health first."""
    try:  # only the main thread may install handlers; elsewhere the caller owns signals
        previous = signal.signal(signal.SIGTERM, _raise_system_exit)
        installed = True
    except ValueError:
        previous, installed = None, False
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "ab") as logf:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
            except OSError as exc:
                raise BackendError(f"cannot start the {name} ({argv[0]}): {exc}") from None
        log.info("starting %s on port %d (pid %d, log %s)", name, port, proc.pid, log_path)
        started = time.monotonic()
        _wait_ready(proc, name=name, url=f"http://127.0.0.1:{port}{health_path}",
                    timeout_s=timeout_s, timeout_setting=timeout_setting, log_path=log_path)
        log.info("%s ready in %.1f s", name, time.monotonic() - started)
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
        try:
            if proc is not None:
                _stop(proc)
        finally:
            if installed:  # None: a handler set outside Python; the default is the closest
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _wait_ready(proc: subprocess.Popen[bytes], *, name: str, url: str, timeout_s: float,
                timeout_setting: str, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise BackendError(f"the {name} {how} during start-up; the end of its log "
                               f"{log_path}:\n{_tail(log_path)}")
        if _answers(url):
            return
        if time.monotonic() > deadline:
            raise BackendError(f"the {name} did not answer {url} within {timeout_s:g} s — "
                               f"raise {timeout_setting} if it is still loading; the end of "
                               f"its log {log_path}:\n{_tail(log_path)}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it after a grace period, reap the leader."""
    if proc.poll() is None:
        _killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _killpg(proc.pid, signal.SIGKILL)  # children that outlived the leader (vLLM workers)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# --- helpers --------------------------------------------------------------------------------

def _openai_endpoint(cfg: LLMConfig) -> LLMEndpoint:
    base = (cfg.base_url or "").rstrip("/")
    key = os.environ.get(cfg.api_key_env) or "not-needed"
    url = f"{base}/models"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise BackendError(f"{url} rejected the API key (HTTP {exc.code}) — put the key in "
                               f"the environment variable {cfg.api_key_env}") from None
        if cfg.model:  # some servers do not list models; the name is given, go on
            log.warning("%s answered HTTP %d; using llm.model %r", url, exc.code, cfg.model)
            return LLMEndpoint(base_url=base, model=cfg.model, api_key=key)
        raise BackendError(f"{url} answered HTTP {exc.code} — check that llm.base_url ends "
                           "in /v1, or set llm.model") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BackendError(f"cannot reach the model server at {url}: {reason} — start it "
                           "(e.g. `docker compose up -d vllm`) or fix llm.base_url") from None
    try:
        ids = [m["id"] for m in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
        ids = None
    if cfg.model:
        if ids is not None and cfg.model not in ids:
            log.warning("llm.model %r is not among the models %s lists: %s", cfg.model, url, ids)
        return LLMEndpoint(base_url=base, model=cfg.model, api_key=key)
    if not ids:
        raise BackendError(f"{url} did not list any model (expected {{\"data\": [{{\"id\": "
                           "...}]}) — set llm.model, or check that llm.base_url ends in /v1")
    return LLMEndpoint(base_url=base, model=ids[0], api_key=key)


def _answers(url: str) -> bool:
    try:
        with _LOCAL.open(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 30, max_bytes: int = 16384) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(cannot read the log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _log_path(backend: str, log_dir: str | Path | None) -> Path:
    if log_dir is not None:
        path = Path(log_dir) / f"{backend}-server.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    fd, name = tempfile.mkstemp(prefix=f"pipeline-{backend}-server-", suffix=".log")
    os.close(fd)
    return Path(name)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
