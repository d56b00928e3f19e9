"""Processes of a run: finding them, ending them (with all their descendants), and ending
what a dead run left (`reap`). Used by the run guard (pipeline/executor/guard.py) and its
reaper process (pipeline/executor/reaper.py).

Only psutil and the standard library are imported: the reaper must start in milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

ENV_VAR = "PIPELINE_RUN_GUARD"
DRIVER_FILE, PROCS_FILE, LOCK_FILE, LOG_FILE = "driver.json", "procs.json", ".lock", "reaper.log"


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a reader (or a restart after a kill) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable %s: %s", path, e)
        return None


def alive(p: psutil.Process) -> bool:
    """Still running and still the same process (psutil checks the create time); a zombie has
    already exited and only waits for its parent."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def process(pid: Any, create_time: Any) -> psutil.Process | None:
    """The live process `pid` if it is still the one started at `create_time` (not a reused pid)."""
    try:
        p = psutil.Process(int(pid))
        if create_time is not None and abs(p.create_time() - float(create_time)) > 0.05:
            return None
    except (psutil.NoSuchProcess, TypeError, ValueError):
        return None
    return p if alive(p) else None


def protected() -> set[psutil.Process]:
    """This process and its ancestors: never signalled, whatever they match."""
    me = psutil.Process()
    return {me, *me.parents()}


def matching(markers: Iterable[str], token: str | None) -> list[psutil.Process]:
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


def terminate(procs: Iterable[psutil.Process], grace_s: float,
               protect: set[psutil.Process] | None = None) -> list[int]:
    """End `procs` and all their descendants; returns the pids signalled.

    SIGSTOP comes first: a stopped process sends no more requests and cannot fork, so the tree
    is complete once no stopped process has a child that is not stopped. Then SIGTERM (delivered
    on SIGCONT) lets each exit cleanly, and SIGKILL ends what is left after `grace_s`.
    """
    protect = protected() | (protect or set())
    frozen: dict[int, psutil.Process] = {}
    tried: set[int] = set()
    todo = list(procs)
    while todo:
        for p in todo:
            if p.pid in tried or p in protect:
                continue
            tried.add(p.pid)
            if alive(p):
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
        left = [p for p in left if alive(p)]
    return left


def reap(state_dir: Path) -> list[int]:
    """Kill what the run recorded in `state_dir` left: the processes in procs.json (if pid and
    create time still match), those matching driver.json's markers or token, its reaper, and
    all their descendants. Never this process or its ancestors. Returns the pids killed."""
    state_dir = Path(state_dir)
    info = read_json(state_dir / DRIVER_FILE)
    info = info if isinstance(info, dict) else {}
    records = read_json(state_dir / PROCS_FILE)
    found = [process(r.get("pid"), r.get("create_time"))
             for r in (records if isinstance(records, list) else []) if isinstance(r, dict)]
    found.append(process(info.get("reaper_pid"), info.get("reaper_create_time")))
    found += matching(info.get("markers") or [], info.get("token"))
    return terminate([p for p in found if p is not None], grace_s=3.0)
