"""The verdict: what the runner observed of one sample, mapped to a status.

The child leaves its evidence (a JSON object: "nonce", "passed", "total", optional
"error" and "memory_error") on a pipe only the runner reads, and only at the end of the
tests. Only evidence that carries this run's nonce shows that the tests ran to the end;
everything else (exit code, stdout) is ignored.
"""

from __future__ import annotations

from .protocol import FAILED, MEMORY, PASSED, TIMEOUT

#: What node writes to stderr when it runs out of memory and aborts.
NODE_OOM_MARKERS = ("JavaScript heap out of memory", "Fatal process OOM", "std::bad_alloc",
                    "Array buffer allocation failed")


def decide(evidence: dict | None, nonce: str, *, timed_out: bool, exit_desc: str,
           oom_killed: bool, tests_total: int) -> tuple[str, int, int, str]:
    """Map what the runner observed to (status, tests_passed, tests_total, detail).

    `tests_total` is the runner's own count (see `testcount`), reported when the
    evidence has none.
    """
    if timed_out:
        return TIMEOUT, 0, tests_total, "timed out"
    if evidence is None or evidence.get("nonce") != nonce:
        if oom_killed:
            return MEMORY, 0, tests_total, "the out-of-memory killer killed a process"
        why = "no evidence that the tests ran to the end" if evidence is None \
            else "evidence with a wrong nonce"
        return FAILED, 0, tests_total, f"{why} ({exit_desc})"
    passed = int(evidence.get("passed", 0))
    total = int(evidence.get("total") or tests_total)
    if evidence.get("memory_error"):
        return MEMORY, passed, total, "MemoryError"
    if oom_killed and (evidence.get("error") or passed != total):
        return MEMORY, passed, total, "the out-of-memory killer killed a process"
    if evidence.get("error"):
        return FAILED, passed, total, str(evidence["error"])
    if total == 0:
        return FAILED, 0, 0, "no tests found"
    if passed != total:
        return FAILED, passed, total, f"{total - passed} of {total} tests failed"
    return PASSED, passed, total, ""


def node_ran_out_of_memory(status: str, detail: str, stderr: str) -> bool:
    """A node sample that left no evidence because node aborted for lack of memory."""
    return status == FAILED and detail.startswith("no evidence") \
        and any(marker in stderr for marker in NODE_OOM_MARKERS)
