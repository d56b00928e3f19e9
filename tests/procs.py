"""Finding the processes a test started by a path on their command line (a Ray temp dir)."""

from __future__ import annotations

import psutil


def processes_naming(marker: str) -> list[psutil.Process]:
    """Every live process with `marker` in an argument of its command line."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found
