"""Execution verdicts found by their content, so a rerun, a resume or an `--extend` runs
no sample twice.

The key is the sha256 of the request the runner gets (code, tests, language, every limit)
plus what else decides the verdict: the sandbox environment (the image's id, or the host
Python for backend=process) and the runner's own source. A rebuilt image or a changed runner
is a new key, so nothing stale is served. `sandbox_error` is never stored: it says the
sandbox failed, not the code, and is retried on the next run.

It is the same sqlite store as the LLM request cache (`pipeline.llm.cache.RequestCache`):
WAL, one short transaction per write, safe for several processes. A result is stored the
moment it comes back, so a SIGKILL loses only the samples that were running.

`PIPELINE_SANDBOX_AUDIT=DIR` appends one line per execution really started (not served
from the store) to `DIR/<pid>.log`: how a test counts what a crash cost.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from pipeline.llm.cache import RequestCache, canonical_json

RUNNER_DIR = Path(__file__).resolve().parent / "runner"


@functools.lru_cache(maxsize=1)
def runner_version() -> str:
    """sha256 of the runner's source files (what runs inside every sandbox)."""
    h = hashlib.sha256()
    for p in sorted(RUNNER_DIR.iterdir()):
        if p.is_file() and p.suffix in (".py", ".cjs"):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


class VerdictCache:
    """`get`/`put` runner results by request; thread-safe (the pool's threads share it)."""

    def __init__(self, path: str | Path, environment: str) -> None:
        self._store = RequestCache(path)
        self._salt = f"{environment}|{runner_version()}|".encode()
        self._lock = threading.Lock()
        audit = os.environ.get("PIPELINE_SANDBOX_AUDIT")
        self._audit = Path(audit) / f"{os.getpid()}.log" if audit else None

    def key(self, request: dict[str, Any]) -> str:
        body = {k: v for k, v in request.items() if k != "id"}
        return hashlib.sha256(self._salt + canonical_json(body)).hexdigest()

    def get(self, request: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            hit = self._store.get(self.key(request))
        return None if hit is None else {**hit, "id": request.get("id")}

    def put(self, request: dict[str, Any], result: dict[str, Any]) -> None:
        if result.get("status") == "sandbox_error":
            return
        with self._lock:
            self._store.put(self.key(request), {k: v for k, v in result.items() if k != "id"})

    def started(self) -> None:
        """Note an execution that is really run (for `PIPELINE_SANDBOX_AUDIT`)."""
        if self._audit is not None:
            self._audit.parent.mkdir(parents=True, exist_ok=True)
            with self._audit.open("a") as f:
                f.write("1\n")

    def close(self) -> None:
        with self._lock:
            self._store.close()
