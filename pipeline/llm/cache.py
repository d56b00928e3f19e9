"""On-disk request cache: sqlite, keyed by a hash of the full request.

A rerun or a resume with the same cache file pays nothing for requests already answered.
Only successful replies are stored. The file is shared safely by several processes (Ray
actors): WAL journal, one short transaction per statement, and a busy timeout so a writer
waits for another instead of failing.

The key covers everything that changes the reply: the model name, the messages or prompt,
every sampling parameter including the seed, and the response format. The server URL is
not part of the key, so a resume against a restarted server (new port) still hits.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    reply TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def canonical_json(request: dict[str, Any]) -> bytes:
    """The request as compact JSON with sorted keys: equal requests, equal bytes."""
    return json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str).encode("utf-8")


def request_key(request: dict[str, Any] | bytes) -> str:
    """sha256 of the canonical JSON of a request body (model, messages, params)."""
    blob = request if isinstance(request, bytes) else canonical_json(request)
    return hashlib.sha256(blob).hexdigest()


class RequestCache:
    """A sqlite file mapping request keys to JSON replies.

    Open one per process (the connection is not picklable); `close()` when done.
    """

    def __init__(self, path: str | Path, busy_timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, so every statement is its own short transaction
        # and no lock is held between calls.
        self._conn = sqlite3.connect(str(self.path), timeout=busy_timeout_s,
                                     isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash; only an OS crash or power
        # loss can lose the last transactions, and those requests are simply redone.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored reply for `key`, or None."""
        row = self._conn.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Stored replies for those of `keys` that are present (one query per 500 keys)."""
        found: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT key, reply FROM replies WHERE key IN ({marks})", chunk).fetchall()
            found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put(self, key: str, reply: dict[str, Any]) -> None:
        """Store a successful reply (last writer wins; replies for a key are equivalent)."""
        self._conn.execute(
            "INSERT OR REPLACE INTO replies (key, reply, created) VALUES (?, ?, ?)",
            (key, json.dumps(reply, ensure_ascii=False), time.time()))

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
