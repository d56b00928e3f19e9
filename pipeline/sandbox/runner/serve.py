"""The runner's loop: read a request, fork a child for it, wait, decide, answer.

`main` is started as pid 1 of a sandbox (`__main__.py`); it imports the common modules
once, so every forked child has them warm, and serves frames on stdin/stdout until the
host says exit or goes away (see `protocol`).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import select
import signal
import sys
import time
import traceback

from .child import child_main
from .evidence import decide, node_ran_out_of_memory
from .javascript_exec import NODE, check_node, harness
from .limits import STARVATION_CAP, oom_kills, run_delay_s
from .protocol import (
    DETAIL_CHARS,
    MEMORY,
    PASSED,
    encode_frame,
    error_result,
    read_frame,
    write_all,
)
from .scratch import kill_group, kill_others, wipe_scratch
from .testcount import count_js_tests, count_tests

WORK_DIR = "/tmp/work"
#: Modules imported by the runner before it forks, so samples do not pay for them.
WARM_MODULES = ("pytest", "re", "math", "collections", "itertools", "functools", "heapq",
                "bisect", "string", "typing", "operator", "random", "datetime", "decimal",
                "fractions", "statistics", "dataclasses", "copy", "json")
#: Capacity asked for the sample's stdout and stderr pipes (Linux's default maximum).
PIPE_BYTES = 1 << 20


class _Capture:
    """Reads one output pipe, keeping the first `limit` bytes and counting the rest."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd, self.limit = fd, limit
        self.data = bytearray()
        self.dropped = 0
        self.open = True

    def pump(self) -> None:
        try:
            b = os.read(self.fd, PIPE_BYTES)
        except BlockingIOError:
            return
        if not b:
            self.open = False
            return
        room = self.limit - len(self.data)
        if room > 0:
            self.data += b[:room]
        self.dropped += max(0, len(b) - max(room, 0))

    def text(self) -> str:
        s = self.data.decode("utf-8", errors="replace")
        if self.dropped:
            s += f"\n[sandbox] output truncated: {self.dropped} more bytes not kept"
        return s


def _style(req: dict) -> tuple[str, int]:
    """(how to run the sample, the runner's count of its tests)."""
    language = req.get("language", "python")
    if language == "javascript":
        total = count_js_tests(req.get("tests"))
        check_node()
        return NODE, total
    if language == "python":
        return count_tests(req.get("tests") or "")
    raise ValueError(f"unknown language {language!r}")


def _exit_desc(status_word: int | None) -> str:
    if status_word is None:
        return "killed at the deadline"
    if os.WIFSIGNALED(status_word):
        return f"killed by signal {os.WTERMSIG(status_word)}"
    return f"exit code {os.WEXITSTATUS(status_word)}"


class Runner:
    """The runner's state: channel fds and the SIGCHLD wakeup pipe.

    The runner is pid 1 of its sandbox (a container, or a bubblewrap sandbox for
    backend=process) and owns the whole pid namespace, /tmp and /dev/shm.
    """

    def __init__(self, chan_in: int, chan_out: int) -> None:
        self.chan_in, self.chan_out = chan_in, chan_out
        self.work_dir = WORK_DIR
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)

    def send(self, obj: object) -> None:
        write_all(self.chan_out, encode_frame(obj))

    def serve(self) -> None:
        self.send({"op": "ready", "python": sys.version.split()[0], "pid": os.getpid()})
        while True:
            req = read_frame(self.chan_in)
            if not isinstance(req, dict) or req.get("op") == "exit":
                return
            try:
                res = self.run(req)
            except Exception as exc:  # a runner bug must not look like failing code
                res = error_result(req.get("id"), traceback.format_exc(),
                                   f"runner error: {exc!r}")
                self.cleanup(None)
            self.send(res)

    def run(self, req: dict) -> dict:
        """Run one sample in a forked child and return its result frame."""
        timeout = float(req["timeout_s"])
        limit = int(req.get("output_limit", 65536))
        style, tests_total = _style(req)
        nonce = os.urandom(16).hex()
        self.cleanup(None)  # a fresh /tmp even if an earlier sample left a mess
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        for fd in (out_w, err_w):  # fewer, bigger reads when the code floods its output
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        ev_r, ev_w = os.pipe()
        oom_before = oom_kills()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            child_main(req, style, nonce, self.work_dir, (out_w, err_w, ev_w),
                       {self.chan_in, self.chan_out, self.wake_r, self.wake_w, out_r, err_r,
                        ev_r})
        for fd in (out_w, err_w, ev_w):
            os.close(fd)
        caps = [_Capture(out_r, limit), _Capture(err_r, limit), _Capture(ev_r, 1 << 20)]
        for c in caps:
            os.set_blocking(c.fd, False)
        status_word, timed_out = self._wait(pid, caps, t0, timeout)
        if status_word is not None and os.WIFSIGNALED(status_word) \
                and os.WTERMSIG(status_word) == signal.SIGXCPU:
            timed_out = True  # RLIMIT_CPU
        duration = time.monotonic() - t0
        self.cleanup(caps)
        for c in caps:
            os.close(c.fd)
        try:
            evidence = json.loads(caps[2].data.decode("utf-8")) if caps[2].data else None
        except ValueError:  # two writers (the code forked) or a cut write
            evidence = None
        exit_desc = _exit_desc(status_word)
        oom = oom_before >= 0 and oom_kills() > oom_before
        status, passed, total, detail = decide(
            evidence if isinstance(evidence, dict) else None, nonce, timed_out=timed_out,
            exit_desc=exit_desc, oom_killed=oom, tests_total=tests_total)
        if timed_out:
            detail = f"timed out after {timeout:g} s"
        stderr = caps[1].text()
        if style == NODE and node_ran_out_of_memory(status, detail, stderr):
            status, detail = MEMORY, f"node ran out of memory ({exit_desc})"
        if status != PASSED and detail:
            stderr += f"\n[sandbox] {status}: {detail[:DETAIL_CHARS]}"
        return {"id": req.get("id"), "status": status, "duration_s": round(duration, 4),
                "tests_passed": passed, "tests_total": total, "stdout": caps[0].text(),
                "stderr": stderr, "detail": detail[:DETAIL_CHARS]}

    def _wait(self, pid: int, caps: list[_Capture], t0: float,
              timeout: float) -> tuple[int | None, bool]:
        """Pump the pipes until the child exits or runs out of time.

        Returns (wait status, or None if it was killed at the deadline; timed_out).
        """
        budget = timeout
        while True:
            done, status_word = os.waitpid(pid, os.WNOHANG)
            if done:
                return status_word, False
            now = time.monotonic() - t0
            if now >= budget:
                starved = run_delay_s(pid)
                if now - starved >= timeout or now >= timeout * STARVATION_CAP:
                    kill_group(pid)
                    return None, True
                budget = max(min(timeout + starved, timeout * STARVATION_CAP), now + 0.05)
            fds = [c.fd for c in caps if c.open] + [self.wake_r]
            ready, _, _ = select.select(fds, [], [], max(0.0, budget - now))
            for c in caps:
                if c.fd in ready:
                    c.pump()
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 512)

    def cleanup(self, caps: list[_Capture] | None) -> None:
        """Kill every process but the runner, drain the pipes, wipe scratch."""
        kill_others()
        if caps:
            # The writers are dead: read what is left.
            deadline = time.monotonic() + 5.0
            while any(c.open for c in caps) and time.monotonic() < deadline:
                fds = [c.fd for c in caps if c.open]
                ready, _, _ = select.select(fds, [], [], max(0.0, deadline - time.monotonic()))
                for c in caps:
                    if c.fd in ready:
                        c.pump()
        wipe_scratch()


def _nondumpable() -> None:
    """PR_SET_DUMPABLE 0: other processes of our uid cannot ptrace us or open /proc/1/fd."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except Exception:
        pass


def main(argv: list[str] | None = None) -> None:
    """Serve frames on stdin/stdout.

    `--container` (required): we run as pid 1 of a sandbox's pid namespace, so after
    each sample we kill everything else and wipe /tmp and /dev/shm.
    """
    argv = sys.argv[1:] if argv is None else argv
    if "--container" not in argv or os.getpid() != 1:
        sys.exit("runner: needs --container and to run as pid 1 of a sandbox (container or "
                 "bubblewrap), since it kills every other process after each sample")
    chan_in, chan_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    _nondumpable()
    for name in WARM_MODULES:  # imported once here, shared by every forked child
        with contextlib.suppress(ImportError):
            __import__(name)
    with contextlib.suppress(OSError):
        harness()
    gc.collect()
    gc.freeze()
    Runner(chan_in, chan_out).serve()
