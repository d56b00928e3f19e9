"""Process backend (sandbox.backend=process): the same runner as a local subprocess.

For machines without Docker. The runner still forks per sample, applies the memory
rlimit, enforces the timeout and decides from evidence, but there is NO isolation: the
code can reach the network and the file system with the pipeline's user rights. Only the
environment is cleaned. Use it for trusted inputs or development, not for model output at
scale.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile

from pipeline.config import SandboxConfig
from pipeline.sandbox.channel import RunnerChannel, SandboxDied, SandboxUnavailable
from pipeline.sandbox.docker_backend import RUNNER_HOST_PATH, SANDBOX_ENV

log = logging.getLogger(__name__)


class ProcessChannel(RunnerChannel):
    """A local runner process with its own scratch directory."""

    def __init__(self) -> None:
        super().__init__()
        self.work_dir = tempfile.mkdtemp(prefix="pipeline-sandbox-")
        env = {**SANDBOX_ENV, "HOME": self.work_dir, "TMPDIR": self.work_dir}
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-B", RUNNER_HOST_PATH, "--workdir",
             os.path.join(self.work_dir, "work")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, cwd=self.work_dir, start_new_session=True)
        self.name = f"runner process {self._proc.pid}"

    def _send(self, data: bytes) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(data)
        self._proc.stdin.flush()

    def _recv_some(self, timeout: float) -> bytes | None:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return b""
        data = os.read(fd, 1 << 20)
        return data or None

    def kill(self) -> None:
        """Kill the runner (tests use this to simulate a crash)."""
        self._proc.kill()

    def close(self) -> None:
        self.dead = True
        for f in (self._proc.stdin, self._proc.stdout):
            try:
                if f is not None:
                    f.close()  # end of input: the runner exits
            except OSError:
                pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=2)
        with contextlib.suppress(OSError):  # the runner's group: it and a running sample
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        shutil.rmtree(self.work_dir, ignore_errors=True)


class ProcessBackend:
    """Creates `ProcessChannel`s (no isolation; see the module docstring)."""

    def __init__(self, cfg: SandboxConfig, pool_id: str) -> None:
        self.cfg = cfg
        self.pool_id = pool_id

    def connect(self) -> None:
        if not os.path.isfile(RUNNER_HOST_PATH):
            raise SandboxUnavailable(f"runner script missing at {RUNNER_HOST_PATH}")
        log.warning("sandbox.backend=process: generated code runs WITHOUT isolation "
                    "(network and files reachable); use backend=docker for untrusted code")

    def start_channel(self) -> ProcessChannel:
        ch = ProcessChannel()
        try:
            ch.wait_ready()
        except SandboxDied as exc:
            ch.close()
            raise SandboxUnavailable(f"the local runner did not start: {exc}") from None
        return ch

    def close(self) -> list[str]:
        return []
