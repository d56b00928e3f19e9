"""Nothing a run starts outlives its driver: a reaper process per run, and a restart that ends
what a dead run left.

The driver of `python -m pipeline run` starts Ray (gcs_server, raylet, agents, workers), a
llama.cpp server and sandbox runners. When the driver is SIGKILLed none of them is told: Ray's
agents live on for a minute and a Ray worker goes on sending requests. `RunGuard` closes the gap:

- on enter it refuses to start while another live run holds the state dir (`RunLocked`), ends
  what a dead run left (`reap`), records the driver in `driver.json` and starts a reaper process
  in its own session, so that killing the driver's process group does not take it along;
- the reaper records the driver's process tree in `procs.json` every 0.5 s and keeps processes
  that were reparented away from it (daemons, `start_new_session`, workers of Ray's raylet). Its
  stdin is a pipe the driver holds: EOF without a `done` line means the driver died, and the
  reaper stops, then kills, everything it knows.

A process belongs to the run if it descends from the driver, if its command line holds a marker
(`add_marker`: the run's Ray temp dir) or if its environment holds the run's token in
`PIPELINE_RUN_GUARD`. The guard sets that variable in the driver, so every child started later
inherits it, even one that left the tree before the reaper first looked.

The process helpers are in pipeline/executor/procs.py, the reaper in pipeline/executor/reaper.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from pipeline.executor.procs import (
    DRIVER_FILE,
    ENV_VAR,
    LOCK_FILE,
    LOG_FILE,
    PROCS_FILE,
    process,
    read_json,
    reap,
    write_json,
)

__all__ = ["ENV_VAR", "RunGuard", "RunLocked", "reap"]

log = logging.getLogger(__name__)

MIN_MARKER_LEN = 8  # a short marker ("/tmp") would match processes that are not the run's


class RunLocked(RuntimeError):
    """Another live run is writing the same output directory."""


class RunGuard:
    """Hold a run's state dir (OUT/state) for one driver and make sure that nothing the driver
    starts outlives it; see the module docstring. Use as `with RunGuard(out / "state") as g:`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir).resolve()
        self._info: dict[str, Any] = {}
        self._reaper: subprocess.Popen[str] | None = None
        self._env_before: str | None = None

    def _path(self, name: str) -> Path:
        return self.state_dir / name

    def __enter__(self) -> RunGuard:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self._path(LOCK_FILE), "w") as lock:
            # Two runs started at once: the second waits here, then finds the first alive.
            fcntl.flock(lock, fcntl.LOCK_EX)
            prev = read_json(self._path(DRIVER_FILE))
            prev = prev if isinstance(prev, dict) else {}
            self._refuse_if_running(prev)
            killed = reap(self.state_dir)
            if killed:
                log.warning("killed %d processes left by a run of %s that died (driver pid %s): %s",
                            len(killed), self.state_dir.parent, prev.get("pid"), killed)
            self._path(PROCS_FILE).unlink(missing_ok=True)  # the reaper writes it when ready
            me = psutil.Process()
            self._info = {"pid": me.pid, "create_time": me.create_time(),
                          "host": socket.gethostname(),
                          "started": datetime.now().astimezone().isoformat(timespec="seconds"),
                          "markers": [], "token": uuid.uuid4().hex}
            write_json(self._path(DRIVER_FILE), self._info)
            self._env_before = os.environ.get(ENV_VAR)
            os.environ[ENV_VAR] = self._info["token"]
            try:
                self._start_reaper()
            except BaseException:
                self.__exit__()
                raise
        return self

    def _refuse_if_running(self, prev: dict[str, Any]) -> None:
        pid, started, host = prev.get("pid"), prev.get("started", "?"), prev.get("host")
        if host not in (None, socket.gethostname()):
            raise RunLocked(
                f"another run (pid {pid} on host {host}, started {started}) is writing "
                f"{self.state_dir.parent}; wait for it to finish or stop it (kill {pid} on {host}),"
                f" then rerun; if that host is down, delete {self._path(DRIVER_FILE)}")
        if process(pid, prev.get("create_time")) is not None:
            raise RunLocked(
                f"another run (pid {pid}, started {started}) is writing {self.state_dir.parent}; "
                f"wait for it to finish or stop it (kill {pid}), then rerun")

    def _start_reaper(self) -> None:
        # The reaper must import this package even where the driver found it through sys.path.
        src = str(Path(__file__).resolve().parents[2])
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
        cmd = [sys.executable, "-m", "pipeline.executor.reaper",
               "--state-dir", str(self.state_dir), "--driver", str(os.getpid())]
        with open(self._path(LOG_FILE), "ab") as out:
            self._reaper = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out,
                                            stderr=subprocess.STDOUT, env=env, text=True,
                                            start_new_session=True)
        with contextlib.suppress(psutil.NoSuchProcess):  # recorded with its create time or not
            created = psutil.Process(self._reaper.pid).create_time()
            self._info.update(reaper_pid=self._reaper.pid, reaper_create_time=created)
        write_json(self._path(DRIVER_FILE), self._info)
        # Wait until the reaper has recorded the tree once, so that from here on it watches.
        deadline = time.monotonic() + 10.0
        while not self._path(PROCS_FILE).exists():
            if self._reaper.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the run's reaper did not start; see {self._path(LOG_FILE)}")
            time.sleep(0.02)

    def add_marker(self, token: str) -> None:
        """Any process whose command line contains `token` belongs to this run (pass something
        unique to the run, such as its Ray temp dir)."""
        if len(token) < MIN_MARKER_LEN or "\n" in token or "\r" in token:
            raise ValueError(f"marker {token!r} must be one line of at least {MIN_MARKER_LEN} "
                             "characters, unique to this run (such as its Ray temp dir)")
        if self._reaper is None:
            raise RuntimeError("add_marker needs an entered RunGuard (use `with RunGuard(...)`)")
        self._info["markers"].append(token)
        write_json(self._path(DRIVER_FILE), self._info)
        try:
            assert self._reaper.stdin is not None
            self._reaper.stdin.write(f"marker {token}\n")
            self._reaper.stdin.flush()
        except OSError:
            log.error("the run's reaper is gone (see %s); processes of this run will only be "
                      "ended by the next run in %s", self._path(LOG_FILE), self.state_dir.parent)

    def __exit__(self, *exc: object) -> None:
        """Normal end: the driver has ended its own children; the reaper leaves without killing."""
        if self._info.get("pid") not in (None, os.getpid()):
            return  # a fork of the driver unwinding its copy; the guard is the driver's
        reaper, self._reaper = self._reaper, None
        if reaper is not None and reaper.stdin is not None:
            with contextlib.suppress(OSError):
                reaper.stdin.write("done\n")
                reaper.stdin.flush()
            with contextlib.suppress(OSError):
                reaper.stdin.close()
            try:
                reaper.wait(timeout=5)
            except subprocess.TimeoutExpired:  # after "done" it would kill nothing anyway
                reaper.kill()
                reaper.wait()
        for name in (PROCS_FILE, DRIVER_FILE):
            self._path(name).unlink(missing_ok=True)
        if self._env_before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = self._env_before
