"""The runner's protocol: length-prefixed JSON frames on its stdin and stdout.

A frame is a 4-byte big-endian length, then that many bytes of UTF-8 JSON. The runner
first sends {"op": "ready", "python", "pid"}; then, for every {"op": "run", "id", "code",
"tests", "timeout_s", "memory_mb", "output_limit"} (optional: "fsize_mb" for RLIMIT_FSIZE,
"nproc" for RLIMIT_NPROC, "language": "python" by default or "javascript") it answers one
result frame {"id", "status", "duration_s", "tests_passed", "tests_total", "stdout",
"stderr", "detail"}; {"op": "exit"} or end of input stops it.

A Python request's "tests" is the tests' source; a JavaScript one's is a list of
[statement, counts as a test, line] (split by the host with tree-sitter, see
`testcount.count_js_tests` and pipeline/languages/javascript.py).

The host's end (pipeline/sandbox/channel.py) imports `encode_frame` and `FrameDecoder`.
"""

from __future__ import annotations

import json
import os
import struct

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 256 * 1024 * 1024
#: Tracebacks and details sent back are cut to this many characters.
DETAIL_CHARS = 4000

#: The statuses of a result frame (the host's `ExecStatus` values).
PASSED, FAILED, TIMEOUT, MEMORY, SANDBOX_ERROR = (
    "passed", "failed", "timeout", "memory_exceeded", "sandbox_error")


def encode_frame(obj: object) -> bytes:
    """One frame: 4-byte big-endian length, then the UTF-8 JSON of `obj`."""
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: feed bytes, get back the complete frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[object]:
        self._buf += data
        frames: list[object] = []
        while len(self._buf) >= HEADER.size:
            (n,) = HEADER.unpack_from(self._buf)
            if n > MAX_FRAME_BYTES:
                raise ValueError(f"frame length {n} exceeds {MAX_FRAME_BYTES}: stream corrupt")
            if len(self._buf) < HEADER.size + n:
                break
            body = bytes(self._buf[HEADER.size:HEADER.size + n])
            del self._buf[:HEADER.size + n]
            frames.append(json.loads(body.decode("utf-8")))
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        b = os.read(fd, n - got)
        if not b:
            return None
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def read_frame(fd: int) -> object | None:
    """Blocking read of one frame from `fd`; None at end of input."""
    head = _read_exact(fd, HEADER.size)
    if head is None:
        return None
    (n,) = HEADER.unpack(head)
    if n > MAX_FRAME_BYTES:
        raise ValueError(f"frame length {n} exceeds {MAX_FRAME_BYTES}")
    body = _read_exact(fd, n)
    if body is None:
        return None
    return json.loads(body.decode("utf-8"))


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` (a pipe may take it in parts)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def error_result(req_id: object, stderr: str, detail: str) -> dict:
    """The result frame of a request the runner could not run (a runner bug)."""
    return {"id": req_id, "status": SANDBOX_ERROR, "duration_s": 0.0, "tests_passed": 0,
            "tests_total": 0, "stdout": "", "stderr": stderr[-DETAIL_CHARS:],
            "detail": detail}
