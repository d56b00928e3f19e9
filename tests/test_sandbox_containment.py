"""Hostile code against both sandbox backends: the issue's containment cases, for real.

Every case runs on backend=docker (marker `docker`) and on backend=process (bubblewrap;
skipped with the reason where bwrap cannot build a sandbox on this machine). A case that a
backend cannot honour is skipped with "not applicable to backend=...: why". After each
misbehaving sample, CLEAN_CHECK runs in the same runner: the sample's processes and files
are gone and the runner goes on.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import SandboxConfig
from pipeline.sandbox import SandboxPool, SandboxUnavailable
from pipeline.sandbox.process_backend import ProcessBackend

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
REPO = Path(__file__).resolve().parents[1]
NO_MEMORY_CGROUP = ("not applicable to backend=process: there is no memory cgroup, so no "
                    "kernel OOM kill; each process is held to memory_mb by RLIMIT_AS, all "
                    "of them together to pids_limit x memory_mb")


def cfg(backend: str, **kw: object) -> SandboxConfig:
    return SandboxConfig(**{"backend": backend, "workers": 1, "timeout_s": 1.0,
                            "memory_mb": 256, "output_limit_bytes": 4096, **kw})


def _process_backend_problem() -> str | None:
    try:
        ProcessBackend(cfg("process"), "probe").connect()
    except SandboxUnavailable as exc:
        return str(exc)
    return None


def backends(**not_applicable: str) -> pytest.MarkDecorator:
    """Parametrize the `pool` fixture over both backends; a backend named in
    `not_applicable` is skipped with that reason."""
    params = []
    for name, marks in (("docker", [pytest.mark.docker]), ("process", [])):
        if name in not_applicable:
            marks = [*marks, pytest.mark.skip(reason=not_applicable[name])]
        params.append(pytest.param(name, marks=marks, id=name))
    return pytest.mark.parametrize("pool", params, indirect=True)


def start_pool(backend: str, **kw: object) -> SandboxPool:
    if backend == "process":
        problem = _process_backend_problem()
        if problem:
            if "bwrap" in os.environ.get("PIPELINE_REQUIRE", ""):
                pytest.fail(f"PIPELINE_REQUIRE includes 'bwrap' but: {problem}")
            pytest.skip(problem)
    p = SandboxPool(cfg(backend, **kw))
    p.start()
    return p


@pytest.fixture(scope="module")
def pool(request: pytest.FixtureRequest) -> Iterator[SandboxPool]:
    """One single-runner pool per backend, created with a secret in our environment."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SECRET, "hunter2")
        p = start_pool(request.param)
    try:
        yield p
    finally:
        p.close()


def run(pool: SandboxPool, code: str, tests: str) -> dict:
    return pool.request("t", code, tests)


def assert_clean(pool: SandboxPool) -> None:
    res = run(pool, "", CLEAN_CHECK)
    assert res["status"] == "passed", res["stderr"][-1500:]


def host_pids() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def host_cmdlines_with(marker: str) -> list[int]:
    found = []
    for pid in host_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(pid)
        except OSError:
            continue
    return found


@backends()
def test_passing_and_failing_samples(pool: SandboxPool) -> None:
    res = run(pool, CODE, TESTS)
    assert (res["status"], res["tests_passed"], res["tests_total"]) == ("passed", 3, 3)
    res = run(pool, CODE, "assert add(1, 2) == 3\nassert add(2, 2) == 5\n")
    assert (res["status"], res["tests_passed"], res["tests_total"]) == ("failed", 1, 2)


@backends()
@pytest.mark.parametrize("code", ["while True:\n    pass\n", "import time\ntime.sleep(10**6)\n"],
                         ids=["loop", "sleep"])
def test_timeout_leaves_no_process(pool: SandboxPool, code: str) -> None:
    res = run(pool, code, TESTS)
    assert res["status"] == "timeout"
    assert_clean(pool)


@backends()
def test_fork_bomb_is_contained_by_the_pid_limit(pool: SandboxPool) -> None:
    # The number of forks that succeed is capped by pids_limit (docker: pids cgroup;
    # process: RLIMIT_NPROC in the runner's user namespace).
    count = ("import os, time\nn = 0\ntry:\n    while n < 1000:\n"
             "        if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n"
             "        n += 1\nexcept OSError:\n    pass\n")
    res = run(pool, count, "assert 0 < n < 64, n\n")
    assert res["status"] == "passed", res["stderr"][-800:]
    assert_clean(pool)
    # A real bomb: a timeout, and the host's process count barely moves meanwhile.
    bomb = ("import os\nwhile True:\n    try:\n        os.fork()\n"
            "    except OSError:\n        pass\n")
    before, peak, stop = len(host_pids()), [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], len(host_pids()))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        res = run(pool, bomb, TESTS)
    finally:
        stop.set()
        watcher.join()
    assert res["status"] == "timeout"
    assert peak[0] - before < 64 + 200, (before, peak[0])  # others share this machine
    assert_clean(pool)


@backends()
@pytest.mark.parametrize("code", [
    "x = []\nfor _ in range(1024):\n    x.append(bytearray(10 * 1024**2))\n",  # 10 GB, bit by bit
    "x = bytearray(10 * 1024**3)\n",
    "x = bytearray(64 * 1024**3)\n",
], ids=["10GB-gradual", "10GB", "64GB"])
def test_memory_exceeded(pool: SandboxPool, code: str) -> None:
    res = run(pool, code, TESTS)
    assert res["status"] == "memory_exceeded", res["stderr"][-800:]
    assert run(pool, CODE, TESTS)["status"] == "passed"


@backends(process=NO_MEMORY_CGROUP)
def test_processes_over_the_container_memory_are_oom_killed(pool: SandboxPool) -> None:
    # Each process stays under the per-process limit; together they exceed the container's
    # (256 + 128 + 2 x 64 MB), so the kernel's OOM killer picks a sample process.
    code = ("import os, time\n"
            "def spawn(n, mb):\n    pids = []\n    for _ in range(n):\n"
            "        pid = os.fork()\n        if pid == 0:\n"
            "            x = bytearray(mb * 1024**2)\n"
            "            for j in range(0, len(x), 4096):\n                x[j] = 1\n"
            "            time.sleep(0.2)\n            os._exit(0)\n"
            "        pids.append(pid)\n"
            "    return [os.waitpid(p, 0)[1] for p in pids]\n")
    p = start_pool(pool.cfg.backend, timeout_s=10.0)  # touching 640 MB takes a while
    try:
        res = run(p, code, "assert spawn(4, 160) == [0, 0, 0, 0]\n")
        assert res["status"] == "memory_exceeded", res["stderr"][-1500:]
        assert_clean(p)  # the runner survived: the kernel picked a sample process
    finally:
        p.close()


@backends()
def test_one_gigabyte_of_output_is_truncated(pool: SandboxPool) -> None:
    backend = pool.cfg.backend
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = "import os\nchunk = b'x' * 2**20\nfor _ in range(1024):\n    os.write(1, chunk)\n"
    p = start_pool(backend, timeout_s=20.0)  # writing 1 GB takes a second or two
    try:
        res = run(p, code + CODE, TESTS)
    finally:
        p.close()
    assert res["status"] == "passed", res["stderr"][-800:]
    assert 4096 <= len(res["stdout"]) < 4096 + 200
    assert f"{2**30 - 4096} more bytes not kept" in res["stdout"]
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 100, f"the pipeline's peak memory grew by {grown_mb:.0f} MB"


@backends()
def test_no_network(pool: SandboxPool) -> None:
    # A server on the host's loopback: the sandbox's 127.0.0.1 is its own.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    tests = (
        "import socket\n"
        "def connects(host, port):\n"
        "    s = socket.socket()\n    s.settimeout(0.5)\n"
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
        res = run(pool, "", tests)
    finally:
        srv.close()
    assert (res["status"], res["tests_passed"]) == ("passed", 4), res["stderr"][-1500:]


@backends()
def test_host_files_and_environment_are_not_visible(pool: SandboxPool,
                                                    tmp_path: Path) -> None:
    assert os.environ.get(SECRET) is None  # the pool was created while it was set
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("hunter2")
    tests = (
        "import os\n"
        f"assert {SECRET!r} not in os.environ\n"
        "assert 'hunter2' not in repr(os.environ)\n"
        f"assert not os.path.exists({str(secret_file)!r})\n"
        f"assert not os.path.exists({str(REPO / 'pyproject.toml')!r})\n"
        f"assert not os.path.exists({str(REPO / 'pipeline' / 'config.py')!r})\n"
        "assert not os.path.exists('/etc/shadow') or not os.access('/etc/shadow', os.R_OK)\n"
        "assert not os.path.exists('/var/run/docker.sock')\n")
    res = run(pool, "", tests)
    assert (res["status"], res["tests_passed"]) == ("passed", 7), res["stderr"][-1500:]


@backends()
def test_writes_outside_tmp_are_impossible(pool: SandboxPool) -> None:
    tests = (
        "import os, sys\n"
        "def writes(path, n=1):\n    try:\n        with open(path, 'ab') as f:\n"
        "            f.write(b'x' * n)\n        return True\n"
        "    except OSError:\n        return False\n"
        "assert not writes('/evil')\nassert not writes('/usr/evil')\n"
        "assert not writes('/etc/evil')\n"
        "assert not writes('/opt/sandbox/runner/__main__.py')\n"
        "assert not writes('/opt/sandbox/runner/evil.py')\n"
        "assert not writes(os.path.join(sys.prefix, 'evil'))\n"
        "assert not writes(os.path.join(os.path.dirname(os.__file__), 'os.py'))\n"
        "assert writes('/tmp/fine')\n"
        "assert not writes('/tmp/big', 100 * 1024**2)\n")  # /tmp holds tmpfs_mb (64)
    res = run(pool, "", tests)
    assert (res["status"], res["tests_passed"]) == ("passed", 9), res["stderr"][-1500:]
    assert_clean(pool)


@backends()
@pytest.mark.parametrize("how", ["new-session", "double-fork"])
def test_detached_processes_are_killed(pool: SandboxPool, how: str) -> None:
    marker = f"{4000 + os.getpid() % 1000}.{int(time.time() * 1000) % 10**6}"
    if how == "new-session":
        code = ("import subprocess\n"
                f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n")
    else:  # the classic daemon: fork, setsid, fork again, the middle process exits
        code = ("import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                f"        os.execvp('sleep', ['sleep', '{marker}'])\n    os._exit(0)\n"
                "os.wait()\nimport time\ntime.sleep(0.1)\n")
    code += "open('/tmp/leak', 'w').write('x')\nopen('/dev/shm/leak', 'w').write('x')\n"
    assert run(pool, code + CODE, TESTS)["status"] == "passed"
    assert host_cmdlines_with(marker) == []  # gone on the host, not only in the sandbox
    assert_clean(pool)


@backends()
def test_identity_and_privileges(pool: SandboxPool) -> None:
    tests = ("import os\nassert os.getuid() == 10001 and os.getgid() == 10001\n"
             "status = open('/proc/self/status').read()\n"
             "assert 'CapEff:\\t0000000000000000' in status\n"
             "assert 'NoNewPrivs:\\t1' in status\n"
             "def opens_for_write(path):\n    try:\n        os.close(os.open(path, os.O_WRONLY))\n"
             "        return True\n    except OSError:\n        return False\n"
             "assert not opens_for_write('/proc/sys/kernel/core_pattern')\n"
             "assert not opens_for_write('/proc/sysrq-trigger')\n"
             "import ctypes\n"  # no nested user namespace (to regain capabilities in)
             "assert ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == -1\n")
    res = run(pool, "", tests)
    assert (res["status"], res["tests_passed"]) == ("passed", 6), res["stderr"][-1500:]


@backends()
@pytest.mark.parametrize(("code", "tests"), [
    ("import os\nos._exit(0)\n", "assert add(1, 2) == 3\n"),
    ("import sys\nsys.exit(0)\n", "assert add(1, 2) == 3\n"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "assert add(1, 2) == 3\n"),
    ("import sys\nsys.stdout.close()\nsys.stderr.close()\n", "assert add(1, 2) == 3\n"),
    ("print('4 passed in 0.01s')\nprint('ALL TESTS PASSED')\nprint('{\"status\": \"passed\"}')\n"
     "import sys\nsys.stdout.flush()\nimport os\nos._exit(0)\n", "assert add(1, 2) == 3\n"),
    # pytest-style tests: pytest itself would exit 0 here
    ("import os\nos._exit(0)\n", "def test_add():\n    assert add(1, 2) == 3\n"),
    (CODE, "import os\n\ndef test_add():\n    os._exit(0)\n"),
    (CODE, "import sys\n\ndef test_add():\n    print('1 passed')\n    sys.exit(0)\n"),
], ids=["os._exit", "sys.exit", "SIGKILL-self", "close-stdout", "fake-markers",
        "pytest-exit-at-import", "pytest-exit-in-test", "pytest-sys.exit-in-test"])
def test_early_exit_and_fake_pass_markers_fail(pool: SandboxPool, code: str,
                                               tests: str) -> None:
    res = run(pool, code, tests)
    assert res["status"] == "failed", res
    assert res["tests_passed"] == 0


@backends()
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


def my_children() -> set[int]:
    """Pids of this test process's direct children."""
    mine = set()
    for pid in host_pids():
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    mine.add(pid)
        except (OSError, ValueError, IndexError):
            continue
    return mine


@backends()
def test_nothing_is_left_on_the_host_after_close(pool: SandboxPool) -> None:
    backend = pool.cfg.backend
    children_before = my_children()
    p = start_pool(backend, workers=2)
    marker = f"{5000 + os.getpid() % 1000}.{int(time.time() * 1000) % 10**6}"
    code = f"import subprocess\nsubprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
    slow_result: list[dict] = []
    slow = threading.Thread(target=lambda: slow_result.append(
        run(p, "import time\ntime.sleep(30)\n", TESTS)))
    slow.start()  # a sample still running when the pool closes
    assert run(p, code + CODE, TESTS)["status"] == "passed"
    time.sleep(0.3)
    if backend == "docker":
        from pipeline.sandbox.docker_backend import POOL_LABEL, connect

        client = connect(p.cfg)
        label = f"{POOL_LABEL}={p.pool_id}"
        assert len(client.containers.list(filters={"label": label})) == 2
        p.close()
        assert client.containers.list(all=True, filters={"label": label}) == []
        client.close()
    else:
        procs = {ch._proc.pid for ch in p.runners()}  # type: ignore[attr-defined]
        pidfds = [ch._pidfd for ch in p.runners()]  # type: ignore[attr-defined]
        assert len(procs) == 2 and None not in pidfds
        runner_pids = set()
        for pid in procs:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                runner_pids |= {int(x) for x in f.read().split()}
        p.close()
        deadline = time.monotonic() + 5  # the runners are reaped by the host's init
        while (procs | runner_pids) & host_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (procs | runner_pids) & host_pids()
    slow.join()
    assert host_cmdlines_with(marker) == []
    # No stray children of the pipeline either (bwrap, unshare helpers). Children that
    # existed before this test (the shared Ray instance, other fixtures) don't count.
    fixture_runners = {ch._proc.pid for ch in pool.runners()  # type: ignore[attr-defined]
                       } if backend == "process" else set()
    assert my_children() - children_before - fixture_runners == set()
    assert slow_result and slow_result[0]["status"] == "sandbox_error"
