"""Helpers shared by the sandbox tests of both backends."""

from __future__ import annotations

import threading
import time

from pipeline.sandbox import SandboxPool


def kill_new_runners(pool: SandboxPool, count: int = 2) -> threading.Thread:
    """Start a thread that kills the next `count` runners of `pool` as each appears.

    Each runner that appears gets the sample at once: it is killed mid-run, however long
    the replacement took to start on a loaded machine. Join the thread afterwards.
    """

    def run() -> None:
        killed: set[int] = set()
        while len(killed) < count:
            fresh = [ch for ch in pool.runners() if id(ch) not in killed]
            time.sleep(0.5 if fresh else 0.05)
            for ch in fresh:
                ch.kill()
                killed.add(id(ch))

    t = threading.Thread(target=run)
    t.start()
    return t
