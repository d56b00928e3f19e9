"""SolveStage: a solution and unit tests for every instruction that has no code yet.

SelfCodeAlign style: the model answers a generated instruction (Self-Instruct, Evol-Instruct)
with one function and `assert` tests, which the execution gate then runs. With
`solutions_per_instruction` = n > 1 it sends n requests per instruction (distinct request
seeds); each parsed reply becomes a candidate sample that keeps the instruction's lineage
(strategy, parent, round, op) and records `scores["solve_n"]`. Which strategies it
answers is the `solved` flag of their records (`pipeline.stages.strategy.Strategy`).
After the execution gate, the global step `PassCountStep` counts per instruction how many
candidates the sandbox passed (a difficulty signal) and writes it into every candidate's
scores.

Replies are parsed with `pipeline.parse` (markdown: `prompts/solve.jinja2`; JSON with
`SOLVE_SCHEMA`: `prompts/solve_json.jinja2`). The instruction itself is not fed to the
parser: an Evol-Instruct instruction may hold "erroneous code" that must not be taken for
the solution.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, ClassVar

from pipeline.config import LLMConfig
from pipeline.llm.client import ChatReply
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.llm.structured import schema_response_format
from pipeline.parse import ParseFailure, ParseResult, parse_json_reply, parse_markdown_reply
from pipeline.prompts import render
from pipeline.record import ExecStatus, RejectReason, Sample, content_hash
from pipeline.stage import GlobalStep
from pipeline.stages.llm_stage import LLMStage
from pipeline.stages.oss_instruct import REPLY_EXCERPT_CHARS, build_response

TEMPLATES = {"markdown": "solve.jinja2", "json_schema": "solve_json.jinja2"}

SOLVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "solution": {"type": "string"},
        "tests": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 8},
    },
    "required": ["solution", "tests"],
    "additionalProperties": False,
}
#: Stand-in problem statement handed to the parser, which wants one.
_GIVEN = "(the given instruction)"


def solve_response_format(backend: str) -> dict[str, Any]:
    """`response_format` for SOLVE_SCHEMA in the form the server takes."""
    return schema_response_format(backend, "solve", SOLVE_SCHEMA)


def parse_solve_reply(text: str, json_mode: bool = False) -> ParseResult:
    """Solution and tests of a reply to the solve prompt (the problem field is a stand-in)."""
    if not text or not text.strip():
        return ParseFailure(RejectReason.UNPARSEABLE, "empty reply")
    if json_mode:
        start = text.find("{")
        if start < 0:
            return ParseFailure(RejectReason.UNPARSEABLE, "no JSON object in the reply")
        given = '{"problem": ' + json.dumps(_GIVEN) + ", "
        return parse_json_reply(text[:start] + given + text[start + 1:])
    return parse_markdown_reply(f"### Problem\n{_GIVEN}\n\n{text}")


class SolveStage(LLMStage):
    """Ask for solution + tests for instructions without code; pass everything else through."""

    name = "solve"
    inputs = ("instruction",)
    outputs = ("response", "code", "tests")

    def __init__(self, endpoint: LLMEndpoint, cfg: LLMConfig, cache_path: str | None,
                 *, strategies: frozenset[str], n: int, seed: int) -> None:
        super().__init__(endpoint, cfg, cache_path, seed=seed)
        if n < 1:
            raise ValueError("n must be at least 1")
        self.strategies = strategies
        self.n = n
        self.json_mode = cfg.response_format == "json_schema"
        self.template = TEMPLATES[cfg.response_format]

    def accepts(self, sample: Sample) -> bool:
        """An instruction of one of `strategies` that has no code yet."""
        return sample.strategy in self.strategies and not sample.code.strip() \
            and bool(sample.instruction.strip())

    def candidates(self, sample: Sample) -> int:
        """n requests per instruction."""
        return self.n

    def build_messages(self, sample: Sample) -> list[dict[str, str]]:
        return [{"role": "user", "content": render(self.template,
                                                   instruction=sample.instruction)}]

    def request_params(self, sample: Sample) -> dict[str, Any]:
        if self.json_mode:
            return {"response_format": solve_response_format(self.cfg.backend)}
        return {}

    def parse_reply(self, sample: Sample, reply: ChatReply) -> list[Sample]:
        """One candidate with the instruction's lineage, or a rejected one; never raises."""
        text = reply.text or ""
        replica = self.replica(sample)
        self.counters[f"generated_{sample.strategy}"] += 1
        cand = Sample(strategy=sample.strategy, parent_id=sample.parent_id,
                      seed_ref=sample.seed_ref, seed=sample.seed, round=sample.round,
                      kind=sample.kind, op=sample.op, language=sample.language,
                      instruction=sample.instruction, model=sample.model,
                      tokens=dict(sample.tokens),
                      scores={**sample.scores, "solve_n": float(self.n),
                              "solve_candidate": float(replica)})
        result = parse_solve_reply(text, self.json_mode)
        if isinstance(result, ParseFailure):
            cand.id = content_hash(sample.id, "solve-rejected", replica, text)
            return [cand.reject(self.name, result.reason,
                                f"{result.detail}; reply: {text[:REPLY_EXCERPT_CHARS]}")]
        self.counters[f"parsed_{sample.strategy}"] += 1
        cand.code, cand.tests = result.solution, result.tests
        cand.response = build_response(result.solution, result.explanation)
        cand.assign_id()
        return [cand]


def record_pass_counts(samples: list[Sample]) -> dict[str, dict[str, Any]]:
    """Write each instruction's passed-candidate count into its candidates' scores.

    Candidates of one instruction share strategy, parent and instruction text. Sets
    `scores["solve_passed"]` and `scores["solve_pass_rate"]` (passed / n) and returns, per
    strategy, the number of instructions and their mean pass rate. `samples` holds every
    candidate, rejected ones too (they count as not passed).
    """
    groups: dict[tuple[str, str | None, str], list[Sample]] = {}
    for s in samples:
        if "solve_n" in s.scores:
            groups.setdefault((s.strategy, s.parent_id, s.instruction), []).append(s)
    rates: dict[str, list[float]] = {}
    for (strategy, _, _), members in groups.items():
        n = max(int(m.scores["solve_n"]) for m in members)
        passed = sum(1 for m in members if not m.rejected and m.execution is not None
                     and m.execution.status is ExecStatus.PASSED)
        for m in members:
            m.scores["solve_passed"] = float(passed)
            m.scores["solve_pass_rate"] = passed / n
        rates.setdefault(strategy, []).append(passed / n)
    return {k: {"instructions": len(v), "mean_pass_rate": round(sum(v) / len(v), 3),
                "pass_rate_histogram": dict(sorted(Counter(round(r, 2) for r in v).items()))}
            for k, v in rates.items()}


class PassCountStep(GlobalStep):
    """After the execution gate: each solve candidate's scores get its instruction's
    passed-candidate count and pass rate; the report (`pass_rates`) gives, per strategy,
    the instructions and their mean pass rate. Rejected candidates are observed (they
    count as failed) but not touched; the step drops nothing."""

    name: ClassVar[str] = "pass_counts"
    inputs: ClassVar[tuple[str, ...]] = ("execution",)
    outputs: ClassVar[tuple[str, ...]] = ("scores",)
    observes_rejected: ClassVar[bool] = True

    def accepts(self, sample: Sample) -> bool:
        """Solve candidates."""
        return "solve_n" in sample.scores

    def process_all(self, samples: list[Sample]) -> list[Sample]:
        self.report["pass_rates"] = record_pass_counts([*self.observed, *samples])
        return samples
