"""The Docker sandbox for real: verdicts, isolation, limits, cleanup, crash recovery.

Needs the Docker daemon and the image pipeline-sandbox:1 (marker `docker`). Most tests
share one single-container pool, so "no leftovers" checks run in the same container as
the sample that tried to leave something behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

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

pytestmark = pytest.mark.docker

SECRET = "PIPELINE_TEST_SECRET"
CODE = "def add(a, b):\n    return a + b\n"
TESTS = "assert add(1, 2) == 3\nassert add(0, 0) == 0\nassert add(-1, 1) == 0\n"
#: Run as a test after a sample that misbehaved: only the runner (pid 1) and this process
#: exist, and /tmp and /dev/shm hold nothing but our work directory.
CLEAN_CHECK = (
    "import os\n"
    "assert sorted(int(p) for p in os.listdir('/proc') if p.isdigit()) == [1, os.getpid()]\n"
    "assert os.listdir('/tmp') == ['work']\n"
    "assert os.listdir('/dev/shm') == []\n"
)


def cfg(**kw: object) -> SandboxConfig:
    return SandboxConfig(**{"workers": 1, "timeout_s": 1.0, "memory_mb": 256,
                            "output_limit_bytes": 4096, **kw})


@pytest.fixture(scope="module")
def pool():
    # The secret is in the pipeline's environment when the containers are created.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SECRET, "hunter2")
        with SandboxPool(cfg()) as p:
            yield p


def run(pool: SandboxPool, code: str, tests: str) -> dict:
    return pool.request("t", code, tests)


def assert_clean(pool: SandboxPool) -> None:
    res = run(pool, "", CLEAN_CHECK)
    assert res["status"] == "passed", res["stderr"][-1500:]


def test_passing_sample(pool: SandboxPool) -> None:
    res = run(pool, CODE, TESTS)
    assert res["status"] == "passed"
    assert res["tests_passed"] == res["tests_total"] == 3


def test_failing_assert(pool: SandboxPool) -> None:
    res = run(pool, CODE, "assert add(1, 2) == 3\nassert add(2, 2) == 5\n")
    assert (res["status"], res["tests_passed"], res["tests_total"]) == ("failed", 1, 2)
    assert "AssertionError" in res["stderr"]


def test_pytest_style_tests(pool: SandboxPool) -> None:
    tests = ("import pytest\n\ndef test_a():\n    assert add(1, 2) == 3\n\n"
             "@pytest.mark.parametrize('x', [1, 2, 3])\ndef test_b(x):\n"
             "    assert add(x, 0) == x\n")
    res = run(pool, CODE, tests)
    assert (res["status"], res["tests_passed"], res["tests_total"]) == ("passed", 4, 4)
    res = run(pool, CODE, tests.replace("== x", "== 1"))
    assert (res["status"], res["tests_passed"], res["tests_total"]) == ("failed", 2, 4)


@pytest.mark.parametrize("code", ["while True:\n    pass\n",
                                  "import time\ntime.sleep(10**6)\n"])
def test_timeout_leaves_no_process(pool: SandboxPool, code: str) -> None:
    res = run(pool, code, TESTS)
    assert res["status"] == "timeout"
    assert_clean(pool)


def test_stray_processes_and_scratch_files_are_removed(pool: SandboxPool) -> None:
    code = ("import subprocess\n"
            "subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
            "open('/tmp/leak', 'w').write('x')\nopen('/dev/shm/leak', 'w').write('x')\n" + CODE)
    assert run(pool, code, TESTS)["status"] == "passed"
    assert_clean(pool)


def test_fork_bomb_is_contained(pool: SandboxPool) -> None:
    code = ("import os\nwhile True:\n    try:\n        os.fork()\n"
            "    except OSError:\n        pass\n")
    assert run(pool, code, TESTS)["status"] == "timeout"
    assert_clean(pool)


@pytest.mark.parametrize("code", ["x = bytearray(10 * 1024**3)\n",
                                  "x = []\nwhile True:\n    x.append(bytearray(10**7))\n"])
def test_memory_exceeded(pool: SandboxPool, code: str) -> None:
    assert run(pool, code, TESTS)["status"] == "memory_exceeded"
    assert run(pool, CODE, TESTS)["status"] == "passed"


def test_processes_over_the_container_memory_are_memory_exceeded() -> None:
    # Each process stays under the per-process limit; together they exceed the container's.
    code = ("import os, time\n"
            "def spawn(n, mb):\n    pids = []\n    for _ in range(n):\n"
            "        pid = os.fork()\n        if pid == 0:\n"
            "            x = bytearray(mb * 1024**2)\n"
            "            for j in range(0, len(x), 4096):\n                x[j] = 1\n"
            "            time.sleep(0.2)\n            os._exit(0)\n"
            "        pids.append(pid)\n"
            "    return [os.waitpid(p, 0)[1] for p in pids]\n")
    with SandboxPool(cfg(timeout_s=10.0)) as p:
        res = run(p, code, "assert spawn(4, 160) == [0, 0, 0, 0]\n")
        assert res["status"] == "memory_exceeded", res["stderr"][-1500:]
        assert_clean(p)  # the runner survived: the kernel picked a sample process


def test_no_network() -> None:
    # A server on the host's loopback: the container's 127.0.0.1 is its own.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    tests = (
        "import socket\n"
        "def connects(host, port):\n"
        "    s = socket.socket()\n    s.settimeout(3)\n"
        "    try:\n        s.connect((host, port))\n        return True\n"
        "    except OSError:\n        return False\n"
        "    finally:\n        s.close()\n"
        f"assert not connects('127.0.0.1', {port})\n"
        "assert not connects('1.1.1.1', 53)\n"
        "assert not connects('1.1.1.1', 443)\n"
        "try:\n    socket.getaddrinfo('example.com', 80)\n    resolved = True\n"
        "except OSError:\n    resolved = False\n"
        "assert not resolved\n")
    try:
        with SandboxPool(cfg(timeout_s=10.0)) as p:
            res = run(p, "", tests)
    finally:
        srv.close()
    assert (res["status"], res["tests_passed"]) == ("passed", 4), res["stderr"][-1500:]


def test_host_environment_is_not_visible(pool: SandboxPool) -> None:
    assert os.environ[SECRET] == "hunter2"  # set in the pipeline's process (fixture)
    tests = (f"import os\nassert {SECRET!r} not in os.environ\n"
             "assert 'hunter2' not in repr(os.environ)\n")
    res = run(pool, "", tests)
    assert res["status"] == "passed", res["stderr"][-1500:]


def test_identity_and_privileges(pool: SandboxPool) -> None:
    tests = ("import os\nassert os.getuid() == 10001 and os.getgid() == 10001\n"
             "status = open('/proc/self/status').read()\n"
             "assert 'CapEff:\\t0000000000000000' in status\n"
             "assert 'NoNewPrivs:\\t1' in status\n")
    res = run(pool, "", tests)
    assert res["status"] == "passed", res["stderr"][-1500:]


def test_root_filesystem_is_read_only(pool: SandboxPool) -> None:
    tests = ("def writes(path):\n    try:\n        open(path, 'a').write('x')\n"
             "        return True\n    except OSError:\n        return False\n"
             "assert not writes('/evil')\nassert not writes('/usr/evil')\n"
             "assert not writes('/opt/sandbox/runner.py')\nassert writes('/tmp/fine')\n")
    res = run(pool, "", tests)
    assert (res["status"], res["tests_passed"]) == ("passed", 4), res["stderr"][-1500:]


@pytest.mark.parametrize("code", [
    "import os\nos._exit(0)\n",
    "import sys\nsys.stdout.close()\nsys.stderr.close()\n",
    "print('4 passed in 0.01s')\nprint('ALL TESTS PASSED')\nprint('{\"status\": \"passed\"}')\n"
    "import sys\nsys.stdout.flush()\nimport os\nos._exit(0)\n",
])
def test_early_exit_and_fake_pass_markers_fail(pool: SandboxPool, code: str) -> None:
    res = run(pool, code, "assert add(1, 2) == 3\n")
    assert res["status"] == "failed", res


def test_output_is_truncated_inside_the_container(pool: SandboxPool) -> None:
    code = "import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 10**6)\n" + CODE
    res = run(pool, code, TESTS)
    assert res["status"] == "passed"
    assert 4096 <= len(res["stdout"]) < 4096 + 200 and "truncated" in res["stdout"]


def test_passing_sample_passes_with_the_cpus_busy(pool: SandboxPool) -> None:
    # Work sized to about half the 1 s timeout on this machine, run again while busy
    # loops compete for every core: the run-queue wait is not charged to the sample.
    code = "def work(n):\n    t = 0\n    for i in range(n):\n        t += i\n    return t\n"
    probe = run(pool, code, "assert work(10**6) > 0\n")
    assert probe["status"] == "passed"
    n = max(10**5, int(10**6 * 0.5 / max(probe["duration_s"], 1e-3)))
    tests = f"assert work({n}) > 0\n"
    base = run(pool, code, tests)
    assert base["status"] == "passed"
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(2 * (os.cpu_count() or 1))]
    try:
        time.sleep(0.2)
        busy = [run(pool, code, tests) for _ in range(2)]
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert [r["status"] for r in busy] == ["passed", "passed"], \
        (base["duration_s"], [(r["status"], r["duration_s"]) for r in busy])


def test_killed_container_is_replaced_and_sample_retried() -> None:
    with SandboxPool(cfg(timeout_s=5.0)) as p:
        first = p.runners()[0]
        threading.Timer(0.5, first.kill).start()  # `docker kill` mid-sample
        res = run(p, "import time\ntime.sleep(1.5)\n" + CODE, TESTS)
        assert res["status"] == "passed"  # the retry, in a fresh container
        assert p.stats["runner_deaths"] == 1 and p.stats["runners_started"] == 2

        def kill_twice() -> None:
            for _ in range(2):
                time.sleep(0.7)
                for ch in p.runners():
                    ch.kill()

        t = threading.Thread(target=kill_twice)
        t.start()
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


def test_stale_containers_of_a_crashed_run_are_removed_at_start() -> None:
    client = connect(cfg())
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = client.containers.create(
        "pipeline-sandbox:1", ["sleep", "600"], network_mode="none",
        labels={LABEL: "1", OWNER_LABEL: f"{_HOST}:{dead.pid}", POOL_LABEL: "stale"})
    stale.start()
    assert cleanup_stale(client) >= 1
    assert _labeled(client, f"{POOL_LABEL}=stale") == []


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
