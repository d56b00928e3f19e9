"""After a sample: kill every process but the runner and wipe the scratch directories.

The runner is pid 1 of its sandbox's pid namespace and owns all of it, so nothing a
sample started (stray daemons, fork bombs, files in /tmp or /dev/shm) outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import time

SCRATCH_DIRS = ("/tmp", "/dev/shm")


def kill_group(pid: int) -> None:
    """SIGKILL the process group of `pid` (the child made its own), and `pid` itself."""
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        with contextlib.suppress(OSError):
            kill(target, signal.SIGKILL)


def _other_pids() -> bool:
    me = os.getpid()
    try:
        return any(n.isdigit() and int(n) != me for n in os.listdir("/proc"))
    except OSError:
        return False


def kill_others() -> None:
    """Kill and reap every process in the sandbox but this one."""
    for _ in range(50):
        # As pid 1 of the namespace, -1 reaches every other process in it in one go.
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)
        reaped = False
        while True:
            try:
                p, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                p = 0
            if p <= 0:
                break
            reaped = True
        if not reaped and not _other_pids():
            return
        time.sleep(0.001)


def wipe_dir(path: str) -> None:
    """Delete everything under `path` (not `path` itself), whatever the modes."""
    try:
        entries = os.listdir(path)
    except OSError:
        return
    for name in entries:
        p = os.path.join(path, name)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(OSError):
                os.chmod(p, 0o700)
            wipe_dir(p)
            with contextlib.suppress(OSError):
                os.rmdir(p)
        else:
            with contextlib.suppress(OSError):
                os.unlink(p)


def wipe_scratch() -> None:
    """Empty /tmp and /dev/shm."""
    for d in SCRATCH_DIRS:
        wipe_dir(d)
