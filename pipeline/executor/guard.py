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

Only psutil and the standard library are imported: the reaper must start in milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

ENV_VAR = "PIPELINE_RUN_GUARD"
DRIVER_FILE, PROCS_FILE, LOCK_FILE, LOG_FILE = "driver.json", "procs.json", ".lock", "reaper.log"
TICK_S = 0.5  # how often the reaper records the tree and checks the driver
SCAN_EVERY = 4  # ticks between full scans of all processes for markers and the token
MIN_MARKER_LEN = 8  # a short marker ("/tmp") would match processes that are not the run's


class RunLocked(RuntimeError):
    """Another live run is writing the same output directory."""


def _write_json(path: Path, data: Any) -> None:
    """Write atomically: a reader (or a restart after a kill) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable %s: %s", path, e)
        return None


def _alive(p: psutil.Process) -> bool:
    """Still running and still the same process (psutil checks the create time); a zombie has
    already exited and only waits for its parent."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _process(pid: Any, create_time: Any) -> psutil.Process | None:
    """The live process `pid` if it is still the one started at `create_time` (not a reused pid)."""
    try:
        p = psutil.Process(int(pid))
        if create_time is not None and abs(p.create_time() - float(create_time)) > 0.05:
            return None
    except (psutil.NoSuchProcess, TypeError, ValueError):
        return None
    return p if _alive(p) else None


def _protected() -> set[psutil.Process]:
    """This process and its ancestors: never signalled, whatever they match."""
    me = psutil.Process()
    return {me, *me.parents()}


def _matching(markers: Iterable[str], token: str | None) -> list[psutil.Process]:
    """Processes whose command line holds a marker or whose environment holds `token`."""
    markers = [m for m in markers if m]
    if not markers and not token:
        return []
    found = []
    for p in psutil.process_iter(["cmdline", "environ"] if token else ["cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or ())
        env = p.info.get("environ") or {}
        if any(m in cmdline for m in markers) or (token and env.get(ENV_VAR) == token):
            found.append(p)
    return found


def _terminate(procs: Iterable[psutil.Process], grace_s: float,
               protect: set[psutil.Process] | None = None) -> list[int]:
    """End `procs` and all their descendants; returns the pids signalled.

    SIGSTOP comes first: a stopped process sends no more requests and cannot fork, so the tree
    is complete once no stopped process has a child that is not stopped. Then SIGTERM (delivered
    on SIGCONT) lets each exit cleanly, and SIGKILL ends what is left after `grace_s`.
    """
    protect = _protected() | (protect or set())
    frozen: dict[int, psutil.Process] = {}
    tried: set[int] = set()
    todo = list(procs)
    while todo:
        for p in todo:
            if p.pid in tried or p in protect:
                continue
            tried.add(p.pid)
            if _alive(p):
                with contextlib.suppress(psutil.Error):
                    p.suspend()
                    frozen[p.pid] = p
        todo = [c for c in psutil.process_iter(["ppid"])
                if c.info["ppid"] in frozen and c.pid not in tried]
    for p in frozen.values():
        with contextlib.suppress(psutil.Error):
            p.terminate()
            p.resume()
    left = _wait_gone(frozen.values(), grace_s)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    _wait_gone(left, 1.0)
    return sorted(frozen)


def _wait_gone(procs: Iterable[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait up to `timeout_s` for `procs` to exit; returns those still alive."""
    left = list(procs)
    deadline = time.monotonic() + timeout_s
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if _alive(p)]
    return left


def reap(state_dir: Path) -> list[int]:
    """Kill what the run recorded in `state_dir` left: the processes in procs.json (if pid and
    create time still match), those matching driver.json's markers or token, its reaper, and
    all their descendants. Never this process or its ancestors. Returns the pids killed."""
    state_dir = Path(state_dir)
    info = _read_json(state_dir / DRIVER_FILE)
    info = info if isinstance(info, dict) else {}
    records = _read_json(state_dir / PROCS_FILE)
    found = [_process(r.get("pid"), r.get("create_time"))
             for r in (records if isinstance(records, list) else []) if isinstance(r, dict)]
    found.append(_process(info.get("reaper_pid"), info.get("reaper_create_time")))
    found += _matching(info.get("markers") or [], info.get("token"))
    return _terminate([p for p in found if p is not None], grace_s=3.0)


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
            prev = _read_json(self._path(DRIVER_FILE))
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
            _write_json(self._path(DRIVER_FILE), self._info)
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
        if _process(pid, prev.get("create_time")) is not None:
            raise RunLocked(
                f"another run (pid {pid}, started {started}) is writing {self.state_dir.parent}; "
                f"wait for it to finish or stop it (kill {pid}), then rerun")

    def _start_reaper(self) -> None:
        # The reaper must import this package even where the driver found it through sys.path.
        src = str(Path(__file__).resolve().parents[2])
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
        cmd = [sys.executable, "-m", "pipeline.executor.guard",
               "--state-dir", str(self.state_dir), "--driver", str(os.getpid())]
        with open(self._path(LOG_FILE), "ab") as out:
            self._reaper = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out,
                                            stderr=subprocess.STDOUT, env=env, text=True,
                                            start_new_session=True)
        with contextlib.suppress(psutil.NoSuchProcess):  # recorded with its create time or not
            created = psutil.Process(self._reaper.pid).create_time()
            self._info.update(reaper_pid=self._reaper.pid, reaper_create_time=created)
        _write_json(self._path(DRIVER_FILE), self._info)
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
        _write_json(self._path(DRIVER_FILE), self._info)
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


class _Reaper:
    """The process RunGuard starts: records the driver's tree, kills it when the driver dies."""

    def __init__(self, state_dir: Path, driver_pid: int) -> None:
        self.state_dir = state_dir
        info = _read_json(state_dir / DRIVER_FILE)
        info = info if isinstance(info, dict) and info.get("pid") == driver_pid else {}
        self.driver = _process(driver_pid, info.get("create_time"))
        self.markers: list[str] = list(info.get("markers") or [])
        self.token: str | None = info.get("token")
        # The driver and its ancestors (a shell, a test runner) are never the run's to kill.
        self.protected = _protected()
        self.known: dict[int, psutil.Process] = {}
        self.saved: set[int] | None = None
        self.done = False
        self.wake = threading.Event()

    def read_commands(self) -> None:
        for line in iter(sys.stdin.readline, ""):
            cmd, _, arg = line.rstrip("\n").partition(" ")
            if cmd == "marker" and arg:
                self.markers.append(arg)
            elif cmd == "done":
                self.done = True
                break
        self.wake.set()  # "done", or EOF: the driver closed the pipe by dying

    def snapshot(self, scan: bool) -> bool:
        """Record the driver's descendants, the descendants of what was recorded before and, if
        `scan`, what matches the markers or token. Returns whether the driver is alive."""
        driver_alive = self.driver is not None and _alive(self.driver)
        self.known = {pid: p for pid, p in self.known.items() if _alive(p)}
        if scan:
            for p in _matching(self.markers, self.token):
                self.known.setdefault(p.pid, p)
        children: dict[int, list[psutil.Process]] = {}
        for p in psutil.process_iter(["ppid"]):
            children.setdefault(p.info["ppid"], []).append(p)
        todo = list(self.known) + ([self.driver.pid] if driver_alive and self.driver else [])
        while todo:
            for c in children.get(todo.pop(), ()):
                if c.pid not in self.known:
                    self.known[c.pid] = c
                    todo.append(c.pid)
        for pid in [pid for pid, p in self.known.items() if p in self.protected]:
            del self.known[pid]
        self.save()
        return driver_alive

    def save(self) -> None:
        if self.saved == set(self.known):
            return
        records = []
        for pid, p in self.known.items():
            with contextlib.suppress(psutil.Error):
                records.append({"pid": pid, "create_time": p.create_time(),
                                "cmdline": " ".join(p.cmdline())[:200]})
        _write_json(self.state_dir / PROCS_FILE, records)
        self.saved = set(self.known)

    def run(self) -> int:
        threading.Thread(target=self.read_commands, daemon=True).start()
        tick = 0
        while True:
            alive = self.snapshot(scan=tick % SCAN_EVERY == 0)
            tick += 1
            if not alive:
                why = f"driver {self.driver.pid if self.driver else '?'} is gone"
                break
            if self.wake.wait(TICK_S):
                if self.done:
                    log.info("run ended cleanly; nothing killed")
                    return 0
                why = "driver closed its pipe without 'done' (it died)"
                break
        for p in self.known.values():  # stop what is known at once, then look for the rest
            with contextlib.suppress(psutil.Error):
                p.suspend()
        self.snapshot(scan=True)
        killed = _terminate(list(self.known.values()), grace_s=2.0, protect=self.protected)
        log.warning("%s: killed %d processes: %s", why, len(killed), killed)
        self.snapshot(scan=False)  # procs.json now lists only what survived, if anything
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Kill what a pipeline run started when its driver "
                                 "dies (started by RunGuard; not meant to be run by hand).")
    ap.add_argument("--state-dir", type=Path, required=True)
    ap.add_argument("--driver", type=int, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s reaper[{os.getpid()}] %(levelname)s %(message)s")
    # Ctrl-C and a hangup are for the driver; the reaper must live to see how the driver ends.
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    return _Reaper(args.state_dir, args.driver).run()


if __name__ == "__main__":
    sys.exit(main())
