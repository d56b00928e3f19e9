"""RunGuard with real processes: a fake driver starts children the way Ray, the llama.cpp server
and sandboxes do, then is SIGKILLed; nothing it started may live on."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pipeline.executor.guard import ENV_VAR, RunGuard, RunLocked, reap

ROOT = Path(__file__).resolve().parents[1]
SLEEPER = "import time; time.sleep(600)"

# A fake driver: enters RunGuard, adds a marker, starts (a) a child, (b) a grandchild in its own
# session whose parent exits at once (so it is reparented to init and only the inherited token
# names it), (d) the same without the token, whose parent lives long enough for the reaper to see
# it in the tree, and (e) a child that ignores SIGTERM. Then it writes their pids and sleeps; in
# "clean" mode it leaves a marked child running and ends its `with` block normally.
DRIVER = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from pathlib import Path
    from pipeline.executor.guard import ENV_VAR, RunGuard

    state, marker, mode, pids_file = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    SPAWN = ("import subprocess as s, sys, time; p = s.Popen([sys.executable, '-c', "
             "'import time; time.sleep(600)'], start_new_session=True, stdout=s.DEVNULL, "
             "stderr=s.DEVNULL); print(p.pid, flush=True); time.sleep(float(sys.argv[1]))")

    def grandchild(parent_s, env=None):
        out = subprocess.run([sys.executable, "-c", SPAWN, str(parent_s)], env=env,
                             capture_output=True, text=True, check=True)
        return int(out.stdout)

    with RunGuard(state) as g:
        g.add_marker(marker)
        pids = {"a": subprocess.Popen(["sleep", "600"]).pid, "b": grandchild(0)}
        no_token = {k: v for k, v in os.environ.items() if k != ENV_VAR}
        pids["d"] = grandchild(1.5, env=no_token)
        ignore = "import signal as s, time; s.signal(s.SIGTERM, s.SIG_IGN); time.sleep(600)"
        pids["e"] = subprocess.Popen([sys.executable, "-c", ignore]).pid
        pids["reaper"] = json.loads((state / "driver.json").read_text())["reaper_pid"]
        if mode == "clean":
            pids["left"] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)",
                                             marker]).pid
        tmp = Path(pids_file + ".tmp")
        tmp.write_text(json.dumps(pids))
        os.replace(tmp, pids_file)
        if mode != "clean":
            time.sleep(600)
""")


def _gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_for(cond, timeout_s: float, what: str) -> float:
    """Poll `cond` until true; returns the seconds it took, fails the test after `timeout_s`."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - t0


class Procs:
    """Processes a test started or found; whatever is still alive is killed at teardown."""

    def __init__(self) -> None:
        self.popens: list[subprocess.Popen] = []
        self.found: list[psutil.Process] = []

    def start(self, cmd: list[str], **kw) -> psutil.Process:
        popen = subprocess.Popen(cmd, **kw)
        self.popens.append(popen)
        return self.add(popen.pid)

    def add(self, pid: int) -> psutil.Process:
        p = psutil.Process(pid)
        self.found.append(p)
        return p

    def cleanup(self) -> None:
        for p in self.found:
            if not _gone(p):
                p.kill()
        for popen in self.popens:
            popen.kill()
            popen.wait(timeout=10)


@pytest.fixture
def procs() -> Iterator[Procs]:
    ps = Procs()
    try:
        yield ps
    finally:
        ps.cleanup()


@pytest.fixture
def driver(tmp_path: Path, procs: Procs):
    """Start the fake driver; returns (its process, its children by letter, state dir, marker)."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    state, pids_file = tmp_path / "out" / "state", tmp_path / "pids.json"
    marker = f"/tmp/pipeline-ray-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(mode: str = "kill"):
        drv = procs.start([sys.executable, str(script), str(state), marker, mode, str(pids_file)],
                          env=env, cwd=tmp_path)
        _wait_for(pids_file.exists, 20, "the fake driver to start its children")
        kids = {k: procs.add(pid) for k, pid in json.loads(pids_file.read_text()).items()}
        return drv, kids, state, marker

    return start


def _sigkill(p: psutil.Process) -> None:
    p.send_signal(signal.SIGKILL)
    _wait_for(lambda: _gone(p), 5, f"pid {p.pid} to die")


@pytest.mark.timeout(30)
def test_sigkill_of_driver_ends_everything_it_started(driver, procs: Procs) -> None:
    drv, kids, state, marker = driver()
    # (c) started by the test, not by the driver: it belongs to the run by its command line
    kids["c"] = procs.start([sys.executable, "-c", SLEEPER, marker])
    bystander = procs.start(["sleep", "600"])
    time.sleep(0.7)  # let the reaper's marker scan see (c) once; the kill-time scan would too
    recorded = {r["pid"] for r in json.loads((state / "procs.json").read_text())}
    assert {kids["a"].pid, kids["d"].pid} <= recorded

    _sigkill(drv)
    t = _wait_for(lambda: all(_gone(p) for k, p in kids.items() if k != "e"), 3,
                  "the driver's processes to die")
    assert t < 3
    # (e) ignores SIGTERM: the reaper SIGKILLs it after its 2 s grace
    _wait_for(lambda: _gone(kids["e"]), 4, "the SIGTERM-ignoring child to be SIGKILLed")
    assert not _gone(bystander)
    assert "killed" in (state / "reaper.log").read_text()


@pytest.mark.timeout(40)
def test_restart_reaps_what_a_dead_run_left(driver, procs: Procs, caplog) -> None:
    drv, kids, state, marker = driver()
    kids["c"] = procs.start([sys.executable, "-c", SLEEPER, marker])
    bystander = procs.start(["sleep", "600"])
    time.sleep(0.7)
    _sigkill(kids.pop("reaper"))  # the reaper dies with the driver: nobody kills the leftovers
    _sigkill(drv)
    time.sleep(1.0)
    assert not any(_gone(p) for p in kids.values())

    with caplog.at_level(logging.WARNING, logger="pipeline.executor.guard"), RunGuard(state):
        assert all(_gone(p) for p in kids.values())
        assert os.environ[ENV_VAR] == json.loads((state / "driver.json").read_text())["token"]
    assert f"killed {len(kids)} processes left by a run" in caplog.text
    assert ENV_VAR not in os.environ
    assert not (state / "driver.json").exists()
    assert not _gone(bystander)


@pytest.mark.timeout(30)
def test_a_live_run_holds_the_output_dir(driver, procs: Procs) -> None:
    drv, kids, state, _ = driver()
    with pytest.raises(RunLocked) as err:
        RunGuard(state).__enter__()
    msg = str(err.value)
    assert msg.startswith(f"another run (pid {drv.pid}, started 20")
    assert f"is writing {state.parent}; wait for it to finish or stop it (kill {drv.pid})" in msg
    assert ENV_VAR not in os.environ
    assert json.loads((state / "driver.json").read_text())["pid"] == drv.pid
    assert not any(_gone(p) for p in kids.values())


@pytest.mark.timeout(30)
def test_clean_exit_stops_the_reaper_and_kills_nothing(driver, procs: Procs) -> None:
    drv, kids, state, _ = driver("clean")
    assert procs.popens[0].wait(timeout=10) == 0
    _wait_for(lambda: _gone(kids["reaper"]), 3, "the reaper to exit")
    assert not (state / "driver.json").exists()
    assert not (state / "procs.json").exists()
    time.sleep(1.0)
    assert not _gone(kids["left"]), "the reaper killed a child after a clean exit"
    assert "run ended cleanly; nothing killed" in (state / "reaper.log").read_text()


@pytest.mark.timeout(30)
def test_reap_checks_create_time_and_spares_itself(tmp_path: Path, procs: Procs) -> None:
    sleeper = procs.start(["sleep", "600"])
    me = psutil.Process()
    state = tmp_path / "state"
    state.mkdir()
    records = [{"pid": sleeper.pid, "create_time": sleeper.create_time() - 10},  # a reused pid
               {"pid": me.pid, "create_time": me.create_time()},
               {"pid": me.ppid(), "create_time": me.parent().create_time()}]
    (state / "procs.json").write_text(json.dumps(records))
    assert reap(state) == []
    assert not _gone(sleeper)
    records[0]["create_time"] = sleeper.create_time()
    (state / "procs.json").write_text(json.dumps(records))
    assert reap(state) == [sleeper.pid]
    assert _gone(sleeper)


def test_marker_must_be_specific(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique to this run"):
        RunGuard(tmp_path).add_marker("/tmp")


def test_a_run_on_another_host_holds_the_output_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "driver.json").write_text(json.dumps(
        {"pid": 4242, "create_time": 1.0, "host": "elsewhere", "started": "2026-01-01T00:00:00"}))
    with pytest.raises(RunLocked, match=r"pid 4242 on host elsewhere, .*kill 4242 on elsewhere"):
        RunGuard(state).__enter__()


# A driver that starts a local Ray instance of its own, as RayExecutor does, and an actor that
# keeps writing a heartbeat (standing in for a worker that sends requests).
RAY_DRIVER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from pipeline.executor.guard import RunGuard

    state, temp_dir, beat = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    with RunGuard(state) as g:
        import ray
        g.add_marker(temp_dir)
        ray.init(address="local", _temp_dir=temp_dir, num_cpus=1, include_dashboard=False,
                 log_to_driver=False)

        @ray.remote
        class Beat:
            def run(self):
                while True:
                    beat.write_text(str(time.time()))
                    time.sleep(0.05)

        actor = Beat.remote()
        actor.run.remote()
        time.sleep(600)
""")


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_sigkill_of_a_ray_driver_ends_ray(tmp_path: Path, procs: Procs) -> None:
    import shutil

    script, state, beat = tmp_path / "ray_driver.py", tmp_path / "out" / "state", tmp_path / "beat"
    script.write_text(RAY_DRIVER)
    temp_dir = f"/tmp/pipeline-ray-{uuid.uuid4().hex[:10]}"  # short: Ray's sockets live under it
    try:
        drv = procs.start([sys.executable, str(script), str(state), temp_dir, str(beat)],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
        _wait_for(beat.exists, 90, "the Ray actor's first heartbeat")
        reaper = json.loads((state / "driver.json").read_text())["reaper_pid"]
        tree = [p for p in drv.children(recursive=True) if p.pid != reaper]
        procs.found += tree
        names = " ".join(p.name() for p in tree)
        assert "raylet" in names and "gcs_server" in names, names

        _sigkill(drv)
        _wait_for(lambda: all(_gone(p) for p in tree), 3, "Ray's processes to die")
        last = beat.read_text()
        time.sleep(0.5)
        assert beat.read_text() == last, "the actor still runs"
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
