"""Case2Code: infer a verified function from input/output pairs computed in the sandbox.

Three stages after the execution gate:

- `Case2CodeCasesStage` (sandbox): for every passed sample (and the round-0 seed-task
  samples of strategy `case2code`, which it consumes), takes the calls of the tested
  function whose arguments are literals from its tests (`literal_calls`), runs them
  against the verified code in the sandbox and reads each result's `repr` back
  (`probe_script` / `read_outputs`): the labels are correct by construction. With at
  least `min_shown` + 1 usable pairs it emits a `case2code` child whose instruction shows
  all but up to `held_out` of them (`prompts/case2code.jinja2`) and whose tests assert
  every pair, the held-out ones first.
- `Case2CodeInferStage` (llm): asks the model for the function and parses the code block.
- `Case2CodeCheckStage` (sandbox): runs the answer against those tests.

Counters: cases stage `probed`, `no_cases`, `children`, `duplicate_children` (the
same task from identical verified code); infer stage `generated`, `parsed`.
"""

from __future__ import annotations

import ast
import json
import random
from typing import ClassVar

from pipeline.codecheck import top_level_names
from pipeline.config import Case2CodeConfig, SandboxConfig
from pipeline.llm.client import ChatReply
from pipeline.parse import ParseFailure, parse_markdown_reply
from pipeline.prompts import render
from pipeline.record import ExecStatus, RejectReason, Sample, content_hash
from pipeline.seeds.tasks import TASK_SOURCE_FIELDS, task_samples
from pipeline.stage import FatalStageError, Stage
from pipeline.stages.execute import ExecuteStage
from pipeline.stages.llm_stage import LLMStage
from pipeline.stages.oss_instruct import REPLY_EXCERPT_CHARS, build_response
from pipeline.stages.strategy import BuildContext, Strategy

STRATEGY = "case2code"
TEMPLATE = "case2code.jinja2"
#: Prefix of the probe script's output lines (chosen not to collide with user prints).
MARKER = "@@case2code@@"


def literal_calls(code: str, tests: str, max_chars: int = 200) -> tuple[str, list[str]]:
    """(function name, distinct call sources) for calls in `tests` with literal arguments.

    The function is the one of `code`'s top-level functions that the tests call most.
    """
    names = top_level_names(code)
    try:
        tree = ast.parse(tests)
    except SyntaxError:
        return "", []
    calls: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in names):
            continue
        try:
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                ast.literal_eval(arg)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        if any(k.arg is None for k in node.keywords) or any(
                isinstance(a, ast.Starred) for a in node.args):
            continue
        src = ast.unparse(node)
        if len(src) <= max_chars and src not in calls.setdefault(node.func.id, []):
            calls[node.func.id].append(src)
    if not calls:
        return "", []
    name = max(calls, key=lambda n: (len(calls[n]), n))
    return name, calls[name]


def probe_script(calls: list[str]) -> str:
    """Test code that prints `MARKER [i, repr(result)]` per call (errors are skipped)."""
    return "\n".join([
        "import json as _c2c_json",
        f"_c2c_calls = {calls!r}",
        "for _c2c_i, _c2c_src in enumerate(_c2c_calls):",
        "    try:",
        "        _c2c_out = repr(eval(_c2c_src))",
        "    except Exception:",
        "        continue",
        f"    print({MARKER!r}, _c2c_json.dumps([_c2c_i, _c2c_out]), flush=True)",
        f"assert len(_c2c_calls) == {len(calls)}",
    ])


def read_outputs(stdout: str, calls: list[str], max_chars: int = 200) -> list[tuple[str, str]]:
    """(call, output repr) pairs from the probe's stdout; outputs that are not literals or
    are longer than `max_chars` are left out."""
    pairs: dict[int, str] = {}
    for line in stdout.splitlines():
        if not line.startswith(MARKER + " "):
            continue
        try:
            i, out = json.loads(line[len(MARKER) + 1:])
            ast.literal_eval(out)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(i, int) and 0 <= i < len(calls) and len(out) <= max_chars:
            pairs.setdefault(i, out)
    return [(calls[i], pairs[i]) for i in sorted(pairs)]


def split_cases(pairs: list[tuple[str, str]], key: str,
                cfg: Case2CodeConfig) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(shown, held out): a seeded shuffle, then up to `held_out` kept back, at least one;
    ([], []) when there are fewer than `min_shown` + 1 pairs."""
    if len(pairs) < cfg.min_shown + 1:
        return [], []
    order = list(pairs)
    random.Random(content_hash(STRATEGY, key)).shuffle(order)
    held = max(1, min(cfg.held_out, len(order) - cfg.min_shown))
    return order[held:], order[:held]


class Case2CodeCasesStage(ExecuteStage):
    """Input/output pairs of verified functions, computed in the sandbox; emits tasks."""

    name: ClassVar[str] = "case2code_cases"
    inputs: ClassVar[tuple[str, ...]] = ("code", "tests", "execution")
    outputs: ClassVar[tuple[str, ...]] = ("instruction", "tests")

    def __init__(self, cfg: SandboxConfig, c2c: Case2CodeConfig) -> None:
        super().__init__(cfg)
        self.c2c = c2c
        self._made: set[str] = set()  # ids of the tasks this worker emitted

    def accepts(self, sample: Sample) -> bool:
        """Passed original samples: every strategy's (they go on) and the round-0
        Case2Code seed tasks (consumed); not Case2Code tasks themselves, nor variants."""
        if sample.kind is not None or sample.execution is None \
                or sample.execution.status is not ExecStatus.PASSED:
            return False
        return sample.strategy != STRATEGY or sample.round == 0

    def process_batch(self, samples: list[Sample]) -> list[Sample]:
        jobs: list[tuple[Sample, str, list[str]]] = []
        out: list[Sample] = []
        for s in samples:
            if not (s.strategy == STRATEGY and s.round == 0):
                out.append(s)
            name, calls = literal_calls(s.code, s.tests, self.c2c.max_value_chars)
            if len(calls) < self.c2c.min_shown + 1:
                self.counters["no_cases"] += 1
                continue
            jobs.append((s, name, calls))
        if not jobs:
            return out
        if self._pool is None:
            self._start()
        if self._pool is None:
            raise FatalStageError(f"the sandbox is unavailable for Case2Code: {self._outage}. "
                                  "Fix it and rerun with the same --output to resume.")
        results = self.ticked(self._pool.run_iter((i, s.code, probe_script(calls))
                                                  for i, (s, _, calls) in enumerate(jobs)))
        for (s, name, calls), res in zip(jobs, results, strict=True):
            self.counters["probed"] += 1
            pairs = read_outputs(str(res.get("stdout") or ""), calls, self.c2c.max_value_chars)
            shown, held = split_cases(pairs, s.id, self.c2c)
            if not shown:
                self.counters[f"no_cases_{res.get('status')}"] += 1
                continue
            child = self.child(s, name, shown, held)
            if child.id in self._made:  # identical candidates upstream: one task is enough
                self.counters["duplicate_children"] += 1
                continue
            self._made.add(child.id)
            self.counters["children"] += 1
            out.append(child)
        return out

    def child(self, parent: Sample, name: str, shown: list[tuple[str, str]],
              held: list[tuple[str, str]]) -> Sample:
        """The Case2Code task for one verified function."""
        child = Sample(strategy=STRATEGY, parent_id=parent.id, seed_ref=parent.seed_ref,
                       round=parent.round + 1, op="case2code", language=parent.language,
                       instruction=render(TEMPLATE, name=name, examples=[
                           {"call": c, "output": o} for c, o in shown]),
                       tests="\n".join(f"assert {c} == {o}" for c, o in [*held, *shown]),
                       scores={"case2code_shown": float(len(shown)),
                               "case2code_held_out": float(len(held))})
        child.assign_id()
        return child


class Case2CodeInferStage(LLMStage):
    """Ask the model for the function behind the shown pairs."""

    name = "case2code_infer"
    inputs = ("instruction", "tests")
    outputs = ("response", "code")

    def accepts(self, sample: Sample) -> bool:
        """Case2Code tasks without an answer yet."""
        return sample.strategy == STRATEGY and not sample.code and bool(sample.tests)

    def build_messages(self, sample: Sample) -> list[dict[str, str]]:
        return [{"role": "user", "content": sample.instruction}]

    def parse_reply(self, sample: Sample, reply: ChatReply) -> list[Sample]:
        """The sample with the answer's code, or rejected; never raises."""
        text = reply.text or ""
        self.counters["generated"] += 1
        result = parse_infer_reply(text, case_function(sample.tests), sample.tests)
        if isinstance(result, ParseFailure):
            return [sample.reject(self.name, result.reason,
                                  f"{result.detail}; reply: {text[:REPLY_EXCERPT_CHARS]}")]
        self.counters["parsed"] += 1
        sample.code = result
        sample.response = build_response(result)
        return [sample]


def case_examples_text(instruction: str, name: str) -> str:
    """The part of a Case2Code instruction that differs between tasks: its example calls
    and values, without the template's own lines (which would make every pair of tasks
    look alike to a ROUGE-L comparison)."""
    frame = {line.strip() for line in render(TEMPLATE, name=name, examples=[]).splitlines()}
    return "\n".join(line for line in instruction.splitlines()
                     if line.strip() and line.strip() not in frame)


def case_function(tests: str) -> str:
    """The function a Case2Code task's tests call (`assert name(...) == ...`)."""
    for node in ast.walk(ast.parse(tests)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return node.func.id
    return ""


def parse_infer_reply(text: str, name: str, tests: str) -> str | ParseFailure:
    """The code of a Case2Code answer, which must define `name`; the parse goes through
    `pipeline.parse` with the held-out tests standing in for the reply's own."""
    wrapped = f"### Problem\n(examples)\n\n### Solution\n{text}\n\n### Tests\n```python\n" \
              f"{tests}\n```\n"
    result = parse_markdown_reply(wrapped)
    if isinstance(result, ParseFailure):
        return result
    if name not in top_level_names(result.solution):
        return ParseFailure(RejectReason.UNPARSEABLE, f"the answer does not define `{name}`")
    return result.solution


class Case2CodeCheckStage(ExecuteStage):
    """Run Case2Code answers against all their pairs, held-out ones included."""

    name: ClassVar[str] = "case2code_check"

    def accepts(self, sample: Sample) -> bool:
        """Answered Case2Code tasks not run yet."""
        return sample.strategy == STRATEGY and sample.execution is None


def _sources(ctx: BuildContext) -> list[Sample]:
    return task_samples(ctx.tasks, STRATEGY, ctx.cfg.generation.case2code.num_seeds)


def _stages(ctx: BuildContext) -> list[Stage]:
    cfg = ctx.cfg
    return [Case2CodeCasesStage(cfg.sandbox, cfg.generation.case2code),
            Case2CodeInferStage(ctx.endpoint, cfg.llm, ctx.cache_path, seed=cfg.seed),
            Case2CodeCheckStage(cfg.sandbox)]


def dedup_text(sample: Sample) -> str:
    """Only the example calls and values: Case2Code's prompt text is the same for every
    task and made any two look alike (measured: 6 of 7 verified tasks of a real run
    dropped, e.g. `collapse_whitespace` as a repeat of `caesar_shift`)."""
    return case_examples_text(sample.instruction, case_function(sample.tests))


RECORD = Strategy(name=STRATEGY, sources=_sources, generate=lambda ctx: [], verify=_stages,
                  source_fields=TASK_SOURCE_FIELDS, uses_seed_tasks=True,
                  counted_by="case2code_infer", dedup_text=dedup_text)

