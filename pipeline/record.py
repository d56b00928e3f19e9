"""The one record type that flows through every stage: `Sample`.

Ids are content hashes of what defines a sample (strategy, parent, instruction, code,
tests), so a rerun produces the same ids and resume can skip what is done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class ExecStatus(str, Enum):
    """Verdict of running a sample's code against its tests."""

    PASSED = "passed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    MEMORY_EXCEEDED = "memory_exceeded"
    SANDBOX_ERROR = "sandbox_error"


class RejectReason(str, Enum):
    """Why a sample left the pipeline. Every drop is counted and written."""

    UNPARSEABLE = "unparseable"
    LLM_ERROR = "llm_error"
    LLM_BAD_REQUEST = "llm_bad_request"
    LLM_UNREACHABLE = "llm_unreachable"
    EMPTY_REPLY = "empty_reply"
    NO_TESTS = "no_tests"
    SYNTAX_ERROR = "syntax_error"
    EXEC_FAILED = "exec_failed"
    EXEC_TIMEOUT = "exec_timeout"
    EXEC_MEMORY = "exec_memory_exceeded"
    SANDBOX_ERROR = "sandbox_error"
    DUPLICATE = "duplicate"
    STAGE_CRASH = "stage_crash"
    BEHAVIOUR_CHANGED = "behaviour_changed"
    BUG_NOT_CAUGHT = "bug_not_caught"
    #: The scoring model could not score it (empty response, no room in the context...).
    UNSCORABLE = "unscorable"
    #: Scored, ranked within its group, and below the selection's cut.
    NOT_SELECTED = "not_selected"
    #: Restates a benchmark problem (sample.contamination: benchmark, match, method, score).
    CONTAMINATED = "contaminated"
    #: Dropped by a content filter (length, keywords, a failed evolution); the detail says which.
    FILTERED = "filtered"


def content_hash(*parts: Any) -> str:
    """Stable 16-hex-digit hash of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


@dataclass
class Execution:
    """Result of one sandbox run."""

    status: ExecStatus
    duration_s: float = 0.0
    tests_passed: int = 0
    tests_total: int = 0
    stdout: str = ""
    stderr: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Execution:
        return cls(**{**d, "status": ExecStatus(d["status"])})


@dataclass
class Sample:
    """One instruction/response pair with its code, tests, lineage and verdicts."""

    id: str = ""
    strategy: str = ""
    parent_id: str | None = None
    seed_ref: str | None = None
    seed: str = ""
    round: int = 0
    #: Variant kind for transformed samples: "refactor", "augment" or "bug"; None otherwise.
    kind: str | None = None
    op: str | None = None
    language: str = "python"
    instruction: str = ""
    response: str = ""
    code: str = ""
    tests: str = ""
    model: str = ""
    execution: Execution | None = None
    scores: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    #: The decontamination verdict (benchmark, match, method, score, code: whether the code
    #: was checked too); None until a decontamination stage has seen the sample.
    contamination: dict[str, Any] | None = None
    reject_stage: str | None = None
    reject_reason: RejectReason | None = None
    reject_detail: str = ""

    @property
    def rejected(self) -> bool:
        return self.reject_reason is not None

    def reject(self, stage: str, reason: RejectReason, detail: str = "") -> Sample:
        """Mark the sample as dropped by `stage`; later stages pass it through untouched."""
        self.reject_stage = stage
        self.reject_reason = reason
        self.reject_detail = detail[:2000]
        return self

    def assign_id(self) -> str:
        """Set `id` to the content hash of what defines this sample."""
        self.id = content_hash(
            self.strategy, self.parent_id, self.seed_ref, self.kind, self.op,
            self.instruction, self.code, self.tests,
        )
        return self.id

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["execution"] = self.execution.to_dict() if self.execution else None
        d["reject_reason"] = self.reject_reason.value if self.reject_reason else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        d = dict(d)
        ex = d.get("execution")
        d["execution"] = Execution.from_dict(ex) if ex else None
        rr = d.get("reject_reason")
        d["reject_reason"] = RejectReason(rr) if rr else None
        d["scores"] = dict(d.get("scores") or {})
        d["tokens"] = dict(d.get("tokens") or {})
        return cls(**d)
