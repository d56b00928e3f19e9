"""The host's end of a runner: send a request frame, wait for the answer frame.

A `RunnerChannel` wraps one warm runner (a container, or a bubblewrap sandbox for the
`process` backend). Subclasses say how bytes arrive (`_recv_some`) and leave (`_send`);
this class does the framing and the deadlines. Anything that breaks the conversation
(end of stream, a deadline passed, a corrupt frame) raises `SandboxDied`, after which the
channel is useless and the pool replaces it.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque

from pipeline.sandbox.runner.protocol import FrameDecoder, encode_frame

#: Seconds a fresh runner may take to say it is ready (container start, pytest import).
READY_TIMEOUT_S = 60.0
#: Runner diagnostics (its own stderr) kept for error messages.
DIAG_CHARS = 2000


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run anything: daemon down, image missing, start failures.

    The message says how to fix it.
    """


class SandboxDied(RuntimeError):
    """A runner stopped answering mid-conversation (container killed, crashed, hung)."""


class RunnerChannel:
    """Framed request/response with one runner; subclasses provide the byte transport."""

    name = "runner"

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._frames: deque[object] = deque()
        self._diag = ""
        self.dead = False

    # transport, provided by subclasses
    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def _recv_some(self, timeout: float) -> bytes | None:
        """Bytes of the runner's stdout (b"" if none within `timeout`, None at the end)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the runner and release everything; safe to call twice."""
        raise NotImplementedError

    def _note_diag(self, text: str) -> None:
        self._diag = (self._diag + text)[-DIAG_CHARS:]

    @property
    def diagnostics(self) -> str:
        """The tail of the runner's own stderr (why it died, if it said)."""
        return self._diag.strip()

    def _died(self, why: str) -> SandboxDied:
        self.dead = True
        diag = f"; runner stderr: {self.diagnostics}" if self.diagnostics else ""
        return SandboxDied(f"{self.name}: {why}{diag}")

    def recv(self, timeout: float) -> dict:
        """The next frame, or SandboxDied if none arrives within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self._frames:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._died(f"no answer within {timeout:.0f} s")
            try:
                data = self._recv_some(left)
            except (OSError, ValueError) as exc:  # ValueError: closed by another thread
                raise self._died(f"connection lost ({exc})") from None
            if data is None:
                raise self._died("the runner exited (container killed or crashed)")
            try:
                self._frames.extend(self._decoder.feed(data))
            except ValueError as exc:
                raise self._died(f"corrupt frame ({exc})") from None
        frame = self._frames.popleft()
        if not isinstance(frame, dict):
            raise self._died(f"unexpected frame {frame!r:.100}")
        return frame

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> dict:
        frame = self.recv(timeout)
        if frame.get("op") != "ready":
            raise self._died(f"expected a ready frame, got {frame!r:.200}")
        return frame

    def request(self, req: dict, timeout: float) -> dict:
        """Send one run request and return the runner's result frame."""
        if self.dead:
            raise SandboxDied(f"{self.name}: already dead")
        try:
            self._send(encode_frame(req))
        except OSError as exc:
            raise self._died(f"cannot send ({exc})") from None
        res = self.recv(timeout)
        if res.get("id") != req.get("id"):
            raise self._died(f"answer for {res.get('id')!r}, expected {req.get('id')!r}")
        return res

    def shutdown(self) -> None:
        """Ask the runner to exit (best effort), then close."""
        if not self.dead:
            with contextlib.suppress(OSError):
                self._send(encode_frame({"op": "exit"}))
        self.dead = True
        self.close()
