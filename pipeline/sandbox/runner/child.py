"""The forked child of one sample: detach, limit itself, run the sample, leave evidence.

It starts as a copy of the warm runner, so it first lets go of everything that is the
runner's (signal handlers, the channel and wakeup fds), points stdin at /dev/null and
stdout/stderr at the runner's capture pipes, and sets its limits. A Python sample runs in
this process; a JavaScript one execs node (`javascript_exec`). The evidence goes to the
pipe `ev_w` only after the tests have run; the child never returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys

from .javascript_exec import NODE, exec_node
from .limits import set_child_limits
from .protocol import write_all
from .python_exec import run_asserts, run_pytest
from .testcount import PYTEST


def _redirect(out_w: int, err_w: int, close_fds: set[int]) -> None:
    for fd in close_fds:
        os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    for fd in (devnull, out_w, err_w):
        if fd > 2:
            os.close(fd)


def child_main(req: dict, style: str, nonce: str, work_dir: str,
               pipes: tuple[int, int, int], close_fds: set[int]) -> None:
    """Runs in the forked child; never returns."""
    out_w, err_w, ev_w = pipes
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _redirect(out_w, err_w, close_fds)
        set_child_limits(req, node=style == NODE)
        os.makedirs(work_dir, exist_ok=True)
        os.chdir(work_dir)
        if style == NODE:
            exec_node(req, nonce, ev_w)
        sys.path.insert(0, work_dir)
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        code, tests = req.get("code") or "", req.get("tests") or ""
        run = run_pytest if style == PYTEST else run_asserts
        ev = run(code, tests, work_dir)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        ev["nonce"] = nonce
        write_all(ev_w, json.dumps(ev, default=str).encode("utf-8"))
    except BaseException:
        pass
    os._exit(0)
