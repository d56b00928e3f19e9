"""Host side of the verdict: runner result frames to `Execution`s and reject reasons.

The runner decides the status from evidence (see `runner.evidence.decide`); this module
only maps it onto the record types and builds the result for samples the sandbox could not run.
"""

from __future__ import annotations

from typing import Any

from pipeline.record import ExecStatus, Execution, RejectReason

#: Why a sample is dropped, per execution status (passed samples are kept).
REJECT_REASONS: dict[ExecStatus, RejectReason] = {
    ExecStatus.FAILED: RejectReason.EXEC_FAILED,
    ExecStatus.TIMEOUT: RejectReason.EXEC_TIMEOUT,
    ExecStatus.MEMORY_EXCEEDED: RejectReason.EXEC_MEMORY,
    ExecStatus.SANDBOX_ERROR: RejectReason.SANDBOX_ERROR,
}

#: The keys of one `run_records` output record, in order.
RECORD_KEYS = ("id", "status", "duration_s", "tests_passed", "tests_total", "stdout", "stderr")


def reject_reason(status: ExecStatus) -> RejectReason | None:
    """The reject reason for a status; None for passed."""
    return REJECT_REASONS.get(status)


def parse_status(value: Any) -> ExecStatus:
    """The status of a result frame; anything unknown is a sandbox error, never `failed`."""
    try:
        return ExecStatus(value)
    except ValueError:
        return ExecStatus.SANDBOX_ERROR


def sandbox_error_result(sample_id: Any, detail: str) -> dict[str, Any]:
    """A result frame for a sample the sandbox could not run."""
    return {"id": sample_id, "status": ExecStatus.SANDBOX_ERROR.value, "duration_s": 0.0,
            "tests_passed": 0, "tests_total": 0, "stdout": "",
            "stderr": f"[sandbox] sandbox_error: {detail}", "detail": detail}


def execution_from_result(res: dict[str, Any]) -> Execution:
    """An `Execution` from a runner result frame."""
    return Execution(
        status=parse_status(res.get("status")),
        duration_s=float(res.get("duration_s") or 0.0),
        tests_passed=int(res.get("tests_passed") or 0),
        tests_total=int(res.get("tests_total") or 0),
        stdout=str(res.get("stdout") or ""),
        stderr=str(res.get("stderr") or ""),
    )


def public_record(res: dict[str, Any]) -> dict[str, Any]:
    """The `run_records` output record of a result frame (RECORD_KEYS, nothing else)."""
    ex = execution_from_result(res)
    return {"id": res.get("id"), "status": ex.status.value, "duration_s": ex.duration_s,
            "tests_passed": ex.tests_passed, "tests_total": ex.tests_total,
            "stdout": ex.stdout, "stderr": ex.stderr}
