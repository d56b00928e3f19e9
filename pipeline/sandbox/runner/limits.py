"""Limits: the rlimits a sample's child sets on itself, and what the deadline reads.

Memory: RLIMIT_AS = memory_mb, so an oversized allocation raises MemoryError (node gets
RLIMIT_DATA instead, see `javascript_exec`); processes that together exhaust a
container's memory are killed by the kernel, the sample's first (oom_score_adj), and the
cgroup's OOM counter says so. CPU: RLIMIT_CPU, a backstop behind the wall-clock deadline,
which does not charge the time a sample waited for a CPU.
"""

from __future__ import annotations

import contextlib
import resource

#: Wall-clock cap on one sample, as a multiple of its timeout, however starved it is.
#: (The host imports it to size its own deadline.)
STARVATION_CAP = 3.0


def set_child_limits(req: dict, *, node: bool) -> None:
    """In the child: the request's limits on memory, CPU, file size and processes."""
    mem = int(req["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA if node else resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # A backstop only: the wall-clock deadline (at most STARVATION_CAP x timeout) comes
    # first; SIGXCPU counts as a timeout.
    cpu = int(float(req["timeout_s"]) * STARVATION_CAP) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if req.get("fsize_mb"):  # Python ignores SIGXFSZ: a bigger write raises OSError
        size = int(req["fsize_mb"]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    if req.get("nproc"):  # processes (threads too) of our uid in our user namespace
        resource.setrlimit(resource.RLIMIT_NPROC, (int(req["nproc"]),) * 2)
    # If the container runs out of memory, the kernel kills the sample, not the runner.
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")


def run_delay_s(pid: int) -> float:
    """Seconds `pid` has waited on a run queue (0 if schedstat is unavailable)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def oom_kills() -> int:
    """OOM kills in this container's memory cgroup so far (v2 or v1), -1 if unknown."""
    for path, key in (("/sys/fs/cgroup/memory.events", "oom_kill"),
                      ("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill")):
        try:
            with open(path) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == key:
                        return int(v)
        except (OSError, ValueError):
            continue
    return -1
