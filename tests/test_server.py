"""Backends: the embedded llama.cpp server's life cycle, the openai and vllm backends."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.config import LLMConfig
from pipeline.llm import server, vllm
from pipeline.llm.server import BackendError, start_backend


def _pids_with(*args: str) -> list[int]:
    """Live processes whose command line contains `args` in sequence (zombies included)."""
    needle = "\0".join(args).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if needle in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _gone(pid: int) -> bool:
    """True when `pid` no longer exists, not even as a zombie."""
    return not Path(f"/proc/{pid}").exists()


def _dead(pid: int) -> bool:
    """True when `pid` is gone or a zombie (an orphan's zombie is for init to reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _embedded(**kw: object) -> LLMConfig:
    return LLMConfig(backend="embedded", embedded={"model": "smollm2-135m", "n_ctx": 2048,
                                                   "n_threads": 2, "startup_timeout_s": 60, **kw})


# --- the embedded server (llama.cpp) ----------------------------------------------------------


@pytest.mark.model
def test_embedded_chat_completion_and_cleanup(tmp_path: Path) -> None:
    import openai

    with start_backend(_embedded(), log_dir=tmp_path) as ep:
        port = ep.base_url.split(":")[-1].split("/")[0]
        assert ep.base_url == f"http://127.0.0.1:{port}/v1" and ep.model == "smollm2-135m"
        [pid] = _pids_with("--port", port)
        client = openai.OpenAI(base_url=ep.base_url, api_key=ep.api_key, max_retries=0)
        assert [m.id for m in client.models.list()] == ["smollm2-135m"]
        reply = client.chat.completions.create(
            model=ep.model, max_tokens=16, temperature=0,
            messages=[{"role": "user", "content": "Write a Python function that adds two "
                                                  "numbers."}])
        assert reply.choices[0].message.content.strip()
        assert reply.usage.completion_tokens > 0
    assert _gone(pid) and _pids_with("--port", port) == []
    assert "llama" in (tmp_path / "embedded-server.log").read_text().lower()


class _Boom(Exception):
    pass


def _sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)  # interrupted by the SystemExit the handler raises


def _raise(exc: BaseException) -> None:
    raise exc


@pytest.mark.model
@pytest.mark.parametrize("body,expected", [
    (lambda: _raise(_Boom()), _Boom),
    (lambda: _raise(KeyboardInterrupt()), KeyboardInterrupt),
    (_sigterm_self, SystemExit),
], ids=["exception", "ctrl-c", "sigterm"])
def test_embedded_server_stops_when_body_fails(body, expected, tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(expected), start_backend(_embedded(), log_dir=tmp_path) as ep:
        port = ep.base_url.split(":")[-1].split("/")[0]
        [pid] = _pids_with("--port", port)
        body()
    assert _gone(pid)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.model
def test_server_that_exits_at_startup_quotes_its_log(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"this is not a GGUF file\n" * 100)
    with pytest.raises(BackendError) as err, start_backend(
            _embedded(model_path=str(bogus)), log_dir=tmp_path):
        pass
    msg = str(err.value)
    assert "the embedded server exited with code" in msg and "during start-up" in msg
    assert str(tmp_path / "embedded-server.log") in msg
    log_tail = (tmp_path / "embedded-server.log").read_text().strip().splitlines()[-1]
    assert log_tail in msg
    assert _pids_with(str(bogus)) == []


def test_missing_model_path_is_a_clear_error(tmp_path: Path) -> None:
    if server.importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python not installed")
    with pytest.raises(BackendError, match="model_path .* is not a file"), \
            start_backend(_embedded(model_path=str(tmp_path / "none.gguf"))):
        pass


def test_missing_llama_cpp_says_which_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "_LLAMA_SERVER_MODULES", ("pipeline_no_such_module",))
    with pytest.raises(BackendError, match=r"pipeline_no_such_module is not installed — "
                       r"`pip install 'llama-cpp-python\[server\]'`"), \
            start_backend(_embedded()):
        pass


# --- the shared process life cycle, with a stand-in server -------------------------------------

_FAKE_SERVER = textwrap.dedent("""
    import http.server, signal, subprocess, sys
    port, ignore_term = int(sys.argv[1]), sys.argv[2] == "1"
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "grandchild",
                      str(port)])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers()
        def log_message(self, *a):
            pass
    print("fake server up", flush=True)
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
""")


@pytest.mark.parametrize("ignore_term", [False, True], ids=["sigterm", "sigkill"])
def test_process_group_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 ignore_term: bool) -> None:
    monkeypatch.setattr(server, "_STOP_GRACE_S", 0.5)
    script = tmp_path / "fake_server.py"
    script.write_text(_FAKE_SERVER)
    port = server._free_port()
    argv = [sys.executable, str(script), str(port), "1" if ignore_term else "0"]
    with server._managed_server(argv, name="fake server", port=port, health_path="/health",
                                timeout_s=20, timeout_setting="x",
                                log_path=tmp_path / "fake.log"):
        [leader] = _pids_with(str(script))
        [grandchild] = _pids_with("grandchild", str(port))
    assert _gone(leader)  # reaped: no zombie left by the pipeline
    assert _dead(grandchild)


def test_startup_timeout_names_setting_and_stops(tmp_path: Path) -> None:
    log = tmp_path / "slow.log"
    argv = [sys.executable, "-c", "print('loading weights', flush=True); "
            "import time; time.sleep(300)", "slowserver"]
    with pytest.raises(BackendError) as err, server._managed_server(
            argv, name="vllm server", port=server._free_port(), health_path="/health",
            timeout_s=1, timeout_setting="llm.vllm.startup_timeout_s", log_path=log):
        pass
    assert "did not answer" in str(err.value)
    assert "raise llm.vllm.startup_timeout_s" in str(err.value)
    assert "loading weights" in str(err.value)
    assert _pids_with("slowserver") == []


# --- openai and vllm backends -----------------------------------------------------------------


@pytest.fixture
def models_server() -> Iterator[tuple[str, list[dict]]]:
    """A stand-in /v1/models; the list holds (path, Authorization) of each request seen."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, "auth": self.headers.get("Authorization")})
            if self.headers.get("Authorization") == "Bearer wrong":
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"object": "list", "data": [{"id": "served-a"},
                                                          {"id": "served-b"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", seen
    httpd.shutdown()
    httpd.server_close()


def test_openai_backend_uses_first_served_model(models_server, monkeypatch) -> None:
    url, seen = models_server
    monkeypatch.setenv("MY_KEY", "sk-test")
    cfg = LLMConfig(backend="openai", base_url=url + "/", api_key_env="MY_KEY")
    with start_backend(cfg) as ep:
        assert (ep.base_url, ep.model, ep.api_key) == (url, "served-a", "sk-test")
    assert seen == [{"path": "/v1/models", "auth": "Bearer sk-test"}]


def test_openai_backend_keeps_configured_model(models_server, monkeypatch) -> None:
    url, _ = models_server
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with start_backend(LLMConfig(backend="openai", base_url=url, model="served-b")) as ep:
        assert (ep.model, ep.api_key) == ("served-b", "not-needed")


def test_openai_backend_rejected_key(models_server, monkeypatch) -> None:
    url, _ = models_server
    monkeypatch.setenv("MY_KEY", "wrong")
    cfg = LLMConfig(backend="openai", base_url=url, api_key_env="MY_KEY")
    with pytest.raises(BackendError, match="rejected the API key .* environment variable "
                       "MY_KEY"), start_backend(cfg):
        pass


def test_openai_backend_unreachable_names_url() -> None:
    url = f"http://127.0.0.1:{server._free_port()}/v1"
    with pytest.raises(BackendError, match=f"cannot reach the model server at {url}/models: "
                       ".* fix llm.base_url"), start_backend(LLMConfig(backend="openai",
                                                                       base_url=url)):
        pass


def test_vllm_missing_names_the_setup_script(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("PIPELINE_VLLM_VENV", str(tmp_path / "no-venv"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(BackendError, match="run `bash scripts/setup_vllm.sh`"), \
            start_backend(LLMConfig(backend="vllm")):
        pass


def test_vllm_command_on_cpu_has_the_cpu_flags(tmp_path: Path) -> None:
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg = LLMConfig(backend="vllm", vllm={"python": sys.executable, "model": str(model),
                                           "device": "cpu", "extra_args": ["--seed", "7"]})
    argv, served, env = vllm.vllm_command(cfg, 8123)
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--model") + 1] == str(model)
    assert served == "my-model" and argv[argv.index("--served-model-name") + 1] == "my-model"
    assert "--enforce-eager" in argv and argv[argv.index("--max-model-len") + 1] == "2048"
    assert argv.count("--seed") == 1 and argv[-2:] == ["--seed", "7"]
    assert env == {"VLLM_CPU_KVCACHE_SPACE": "2"}
    gpu = LLMConfig(backend="vllm", model="served", vllm={
        "python": sys.executable, "model": "Org/Some-Model", "device": "gpu"})
    argv, served, env = vllm.vllm_command(gpu, 8123)
    assert served == "served" and env == {} and "--enforce-eager" not in argv
    assert "--max-model-len" not in argv and argv[argv.index("--model") + 1] == "Org/Some-Model"


def test_vllm_rejects_a_directory_without_config_json(tmp_path: Path) -> None:
    cfg = LLMConfig(backend="vllm", vllm={"python": sys.executable, "model": str(tmp_path)})
    with pytest.raises(vllm.VllmSetupError, match="no config.json"):
        vllm.vllm_command(cfg, 8123)
