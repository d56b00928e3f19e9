"""Helpers shared by the sandbox tests of both backends."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from pipeline.config import SandboxConfig
from pipeline.sandbox import SandboxPool, SandboxUnavailable


def require_process_backend_with_node() -> None:
    """Skip, with the reason, where backend=process cannot run JavaScript samples (no
    node, or bwrap cannot make a sandbox); fail instead when PIPELINE_REQUIRE has bwrap."""
    from pipeline.sandbox.process_backend import ProcessBackend

    problem = None
    if shutil.which("node") is None:
        problem = "node is not installed on this host (apt-get install nodejs)"
    else:
        try:
            ProcessBackend(SandboxConfig(backend="process"), "probe").connect()
        except SandboxUnavailable as exc:
            problem = str(exc)
    if problem is None:
        return
    if "bwrap" in os.environ.get("PIPELINE_REQUIRE", ""):
        pytest.fail(f"PIPELINE_REQUIRE includes 'bwrap' but: {problem}")
    pytest.skip(problem)


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
