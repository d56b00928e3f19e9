"""Docker-only behaviour of the sandbox: containers, labels, crash recovery, outages.

The containment cases (hostile code) run on both backends in test_sandbox_containment.py.
Needs the Docker daemon and the sandbox image (`SandboxConfig().image`; marker `docker`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import SandboxConfig
from pipeline.record import ExecStatus, RejectReason, Sample
from pipeline.sandbox import SandboxPool, SandboxUnavailable, check_image
from pipeline.sandbox.docker_backend import (
    _HOST,
    LABEL,
    OWNER_LABEL,
    POOL_LABEL,
    cleanup_stale,
    connect,
)
from pipeline.stage import FatalStageError
from pipeline.stages.execute import ExecuteStage
from tests.sandbox_helpers import kill_new_runners

pytestmark = pytest.mark.docker

CODE = "def add(a, b):\n    return a + b\n"
TESTS = "assert add(1, 2) == 3\nassert add(0, 0) == 0\nassert add(-1, 1) == 0\n"
DOCKER_SOCK = "/var/run/docker.sock"


def cfg(**kw: object) -> SandboxConfig:
    return SandboxConfig(**{"workers": 1, "timeout_s": 1.0, "memory_mb": 256,
                            "output_limit_bytes": 4096, **kw})


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(cfg()) as p:
        yield p


def run(pool: SandboxPool, code: str, tests: str) -> dict:
    return pool.request("t", code, tests)


def test_pytest_style_tests(pool: SandboxPool) -> None:
    tests = ("import pytest\n\ndef test_a():\n    assert add(1, 2) == 3\n\n"
             "@pytest.mark.parametrize('x', [1, 2, 3])\ndef test_b(x):\n"
             "    assert add(x, 0) == x\n")
    res = run(pool, CODE, tests)
    assert (res["status"], res["tests_passed"], res["tests_total"]) == ("passed", 4, 4)
    res = run(pool, CODE, tests.replace("== x", "== 1"))
    assert (res["status"], res["tests_passed"], res["tests_total"]) == ("failed", 2, 4)


def test_killed_container_is_replaced_and_sample_retried() -> None:
    with SandboxPool(cfg(timeout_s=5.0)) as p:
        first = p.runners()[0]
        threading.Timer(0.5, first.kill).start()  # `docker kill` mid-sample
        res = run(p, "import time\ntime.sleep(1.5)\n" + CODE, TESTS)
        assert res["status"] == "passed"  # the retry, in a fresh container
        assert p.stats["runner_deaths"] == 1 and p.stats["runners_started"] == 2

        t = kill_new_runners(p, 2)  # the sample sleeps 3 s: both runners die mid-run
        res = run(p, "import time\ntime.sleep(3)\n" + CODE, TESTS)
        t.join()
        assert res["status"] == "sandbox_error" and "died twice" in res["stderr"]
        assert run(p, CODE, TESTS)["status"] == "passed"  # the pool keeps working
        assert len(p.runners()) == 1


def _labeled(client, label: str) -> list:
    return client.containers.list(all=True, filters={"label": label})


def test_stage_teardown_leaves_no_containers() -> None:
    stage = ExecuteStage(cfg(workers=2))
    stage.setup()
    pool_id = stage._pool.pool_id
    samples = [Sample(code=CODE, tests=TESTS), Sample(code=CODE, tests="assert add(1,1)==3\n"),
               Sample(code="x = bytearray(10 * 1024**3)\n", tests=TESTS)]
    out = stage(samples)
    stage.teardown()
    assert [s.execution.status for s in out] == [ExecStatus.PASSED, ExecStatus.FAILED,
                                                 ExecStatus.MEMORY_EXCEEDED]
    assert [s.reject_reason for s in out] == [None, RejectReason.EXEC_FAILED,
                                              RejectReason.EXEC_MEMORY]
    client = connect(cfg())
    assert _labeled(client, f"{POOL_LABEL}={pool_id}") == []


def _orphan(client: Any, pool: str) -> Any:
    """A created (not started) sandbox container whose owner process is dead."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    return client.containers.create(
        cfg().image, ["sleep", "600"], network_mode="none",
        labels={LABEL: "1", OWNER_LABEL: f"{_HOST}:{dead.pid}", POOL_LABEL: pool})


def test_stale_containers_of_a_crashed_run_are_removed_at_start() -> None:
    client = connect(cfg())
    _orphan(client, "stale").start()
    assert cleanup_stale(client) >= 1
    assert _labeled(client, f"{POOL_LABEL}=stale") == []


def test_a_container_removed_while_cleanup_lists_them_is_not_an_error(monkeypatch) -> None:
    """Another run's sandbox can finish (auto_remove) between the list and the removal.

    CI once failed at start-up on docker-py's per-container inspect of such a one (404).
    """
    client = connect(cfg())
    gone = _orphan(client, "vanishing")
    real_list = client.api.containers

    def list_then_vanish(*args, **kwargs):
        found = real_list(*args, **kwargs)
        gone.remove(force=True)  # the race, for real: it is gone before we act on it
        return found

    monkeypatch.setattr(client.api, "containers", list_then_vanish)
    assert cleanup_stale(client) == 0
    monkeypatch.setattr(client.api, "containers", real_list)
    assert _labeled(client, f"{POOL_LABEL}=vanishing") == []


def test_missing_image_is_a_clear_error_and_a_fatal_stage_error() -> None:
    bad = cfg(image="pipeline-sandbox:does-not-exist")
    with pytest.raises(SandboxUnavailable, match=r"docker build -t pipeline-sandbox:does-not"):
        check_image(bad)
    stage = ExecuteStage(bad)
    stage.setup()
    samples = [Sample(code=CODE, tests=TESTS)]
    with pytest.raises(FatalStageError, match="build-offline.sh"):
        stage(samples)
    stage.teardown()
    assert samples[0].execution.status is ExecStatus.SANDBOX_ERROR


def test_no_pipeline_containers_left_after_close() -> None:
    with SandboxPool(cfg(workers=2)) as p:
        assert run(p, CODE, TESTS)["status"] == "passed"
        pool_id = p.pool_id
    assert _labeled(connect(cfg()), f"{POOL_LABEL}={pool_id}") == []


class DaemonProxy:
    """A unix socket that forwards to the real Docker daemon until `stop()`: stopping it
    is the daemon going away, as far as the pool can tell, without touching dockerd."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._srv = socket.socket(socket.AF_UNIX)
        self._srv.bind(self.path)
        self._srv.listen(64)
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(DOCKER_SOCK)
            with self._lock:
                if self._stopped:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        """Refuse new connections and cut every open one."""
        with self._lock:
            self._stopped = True
            conns, self._conns = self._conns, []
        with contextlib.suppress(OSError):
            self._srv.shutdown(socket.SHUT_RDWR)
        self._srv.close()
        os.unlink(self.path)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()


def test_daemon_going_away_mid_run_is_sandbox_error_then_fatal(tmp_path: Path) -> None:
    if not os.path.exists(DOCKER_SOCK):
        pytest.skip(f"the proxy needs the daemon's socket at {DOCKER_SOCK}")
    proxy = DaemonProxy(tmp_path / "docker.sock")
    stage = ExecuteStage(cfg(docker_host=proxy.url, workers=2, timeout_s=5.0))
    stage.setup()
    try:
        assert stage._pool is not None
        pool_id = stage._pool.pool_id
        first = stage([Sample(code=CODE, tests=TESTS)])
        assert first[0].execution.status is ExecStatus.PASSED
        # The daemon goes away while a batch runs: the sample in flight, and the others.
        threading.Timer(0.5, proxy.stop).start()
        batch = [Sample(code="import time\ntime.sleep(2)\n" + CODE, tests=TESTS)
                 for _ in range(3)]
        with pytest.raises(FatalStageError, match="Docker daemon not reachable"):
            stage(batch)
        assert [s.execution.status for s in batch] == [ExecStatus.SANDBOX_ERROR] * 3
        assert all(s.reject_reason is RejectReason.SANDBOX_ERROR for s in batch)
    finally:
        stage.teardown()
    # With their attach streams cut, the containers saw end of input and went away.
    client = connect(cfg())
    deadline = time.monotonic() + 15
    label = f"{POOL_LABEL}={pool_id}"
    while client.containers.list(all=True, filters={"label": label}) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.containers.list(all=True, filters={"label": label}) == []
    client.close()
