"""The reaper process a run guard starts (pipeline/executor/guard.py): it records the
driver's process tree and, when the driver dies, kills everything it knows."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import psutil

from pipeline.executor.procs import (
    DRIVER_FILE,
    PROCS_FILE,
    alive,
    matching,
    process,
    protected,
    read_json,
    terminate,
    write_json,
)

log = logging.getLogger(__name__)

TICK_S = 0.5  # how often the reaper records the tree and checks the driver
SCAN_EVERY = 4  # ticks between full scans of all processes for markers and the token


class _Reaper:
    """The process RunGuard starts: records the driver's tree, kills it when the driver dies."""

    def __init__(self, state_dir: Path, driver_pid: int) -> None:
        self.state_dir = state_dir
        info = read_json(state_dir / DRIVER_FILE)
        info = info if isinstance(info, dict) and info.get("pid") == driver_pid else {}
        self.driver = process(driver_pid, info.get("create_time"))
        self.markers: list[str] = list(info.get("markers") or [])
        self.token: str | None = info.get("token")
        # The driver and its ancestors (a shell, a test runner) are never the run's to kill.
        self.protected = protected()
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
        driver_alive = self.driver is not None and alive(self.driver)
        self.known = {pid: p for pid, p in self.known.items() if alive(p)}
        if scan:
            for p in matching(self.markers, self.token):
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
        write_json(self.state_dir / PROCS_FILE, records)
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
        killed = terminate(list(self.known.values()), grace_s=2.0, protect=self.protected)
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
