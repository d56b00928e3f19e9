"""Evol-Instruct (WizardCoder): evolve seed tasks in depth and breadth, round after round.

`EvolInstructGenerator` consumes the round-0 seed-task samples of its batch and runs
`rounds` rounds. In round r each live instruction is evolved with one operator, chosen
deterministically from its id and r among `evol.operators`:

- in depth (`prompts/evol_depth.jinja2`, WizardCoder's code methods): `add_constraints`,
  `rarer_requirement`, `more_reasoning`, `erroneous_code` (misdirecting buggy code),
  `complexity` (a time or space bound);
- in breadth (`prompts/evol_breadth.jinja2`): `breadth`, a new task in the same domain.

The elimination step (`elimination_reason`) drops evolutions that failed: empty or
refusing, that copied the prompt's wording or the parent (ROUGE-L >= max_copy_similarity),
that lost information (the parent's function name is gone), got shorter (depth), or are
not a new task (breadth: ROUGE-L against the parent >= breadth_max_similarity). Failed
evolutions are written as rejected (`filtered`, with the reason) and their line ends.
"Answer is not code" is judged downstream: SolveStage rejects replies without code, and
the sandbox answers that do not pass.

Survivors of every round leave the stage with lineage: parent = the instruction they
evolved from, `round` = r, `op` = "evol:<operator>"; they have no code yet (SolveStage
answers them). Counters: `generated` (replies), `parsed` (an evolved question found),
`novel` (survived elimination), `op_<operator>`, `eliminated_<why>`.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.config import EvolConfig, LLMConfig
from pipeline.llm.client import ChatReply
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.llm.structured import schema_response_format
from pipeline.novelty import rouge_l, rouge_tokenize
from pipeline.parse import first_json_object
from pipeline.prompts import render
from pipeline.record import RejectReason, Sample, content_hash
from pipeline.seeds.tasks import TASK_SOURCE_FIELDS, task_samples
from pipeline.stages.llm_stage import LLMStage
from pipeline.stages.oss_instruct import REPLY_EXCERPT_CHARS
from pipeline.stages.strategy import BuildContext, Strategy

STRATEGY = "evol_instruct"
_MARKER = re.compile(r"(?:new|rewritten|evolved)\s+(?:programming\s+)?(?:test\s+)?"
                     r"(?:question|prompt|task|problem)\s*(?:\*\*|#)?\s*:\s*(?:\*\*)?",
                     re.IGNORECASE)
_ANSWER = re.compile(r"^\W*(?:solution|answer|explanation|example solution)\b.*$",
                     re.IGNORECASE | re.MULTILINE)
#: "Here is ..." starts an answer, except in an erroneous_code question ("here is the code").
_HERE = re.compile(r"^\W*(?:here is|here's)\b.*$", re.IGNORECASE | re.MULTILINE)
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})", re.MULTILINE)
#: Phrases of evolving prompts (this one's and earlier versions') that no question needs.
_PROMPT_WORDS = ("given question", "new question", "rewritten prompt", "given prompt",
                 "#rewritten", "#given", "do not solve it", "keep every requirement",
                 "named in backticks")
#: An evolution sharing a run of this many words with the evolving prompt's own text
#: (its method and rules, not the question) copied the prompt.
PROMPT_NGRAM = 8
_REFUSALS = ("i'm sorry", "i am sorry", "as an ai", "i cannot", "i can't")


#: JSON schema of an evolution reply (llm.response_format: json_schema).
EVOL_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"question": {"type": "string"}},
                               "required": ["question"], "additionalProperties": False}


def choose_operator(sample_id: str, rnd: int, operators: list[str] | tuple[str, ...]) -> str:
    """The operator for one sample in one round: a hash of both, so reruns repeat."""
    return operators[int(content_hash(STRATEGY, sample_id, rnd), 16) % len(operators)]


def parse_evolved(text: str, operator: str) -> str:
    """The evolved question in a reply ('' if none).

    Takes the text after the last "New question:" marker (the whole reply without one),
    stops at a solution or answer section, and keeps code only for `erroneous_code`, whose
    question must show its buggy code (the first block; anything after it is cut).
    """
    text = (text or "").replace("\r\n", "\n")
    markers = list(_MARKER.finditer(text))
    if markers:
        text = text[markers[-1].end():]
    for pattern in (_ANSWER,) if operator == "erroneous_code" else (_ANSWER, _HERE):
        answer = pattern.search(text)
        if answer is not None and answer.start() > 0:
            text = text[:answer.start()]
    fences = list(_FENCE.finditer(text))
    if operator == "erroneous_code" and len(fences) >= 2:
        text = text[:text.find("\n", fences[1].start()) + 1 or len(text)]
    elif fences:
        text = text[:fences[0].start()]
    text = re.sub(r"^\s*(?:\*\*|__)|(?:\*\*|__)\s*$", "", text.strip()).strip()
    return re.sub(r"\n{3,}", "\n\n", text)


def function_names(instruction: str) -> list[str]:
    """Function names an instruction asks for: `name(...)` or snake_case `name` in backticks."""
    names = []
    for span in re.findall(r"`([^`\n]+)`", instruction):
        m = re.match(r"\s*([A-Za-z_]\w*)\s*\(", span) or re.fullmatch(r"\s*([a-z]+_\w+)\s*", span)
        if m and m.group(1) not in names:
            names.append(m.group(1))
    return names


def render_prompt(instruction: str, operator: str, json_mode: bool = False) -> str:
    """The evolving prompt for one instruction and operator."""
    if operator == "breadth":
        return render("evol_breadth.jinja2", instruction=instruction, json_mode=json_mode)
    names = function_names(instruction)
    return render("evol_depth.jinja2", instruction=instruction, operator=operator,
                  name=names[0] if names else "", json_mode=json_mode)


def reply_question(text: str, json_mode: bool) -> str:
    """The text to look for the evolved question in: the JSON `question` in json mode
    (when the reply has one), else the whole reply."""
    if json_mode:
        obj = first_json_object(text)
        if obj is not None and isinstance(obj.get("question"), str):
            return obj["question"]
    return text


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    toks = rouge_tokenize(text)
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def copies_prompt(evolved: str, operator: str) -> bool:
    """True if `evolved` repeats PROMPT_NGRAM words in a row of the prompt's own text.

    The `Method:` line is left out: an evolved question may well say "here is a piece of
    erroneous code as a reference" in the method's words.
    """
    frame = "\n".join(line for line in render_prompt("", operator).splitlines()
                      if not line.startswith("Method:"))
    return bool(_ngrams(evolved, PROMPT_NGRAM) & _ngrams(frame, PROMPT_NGRAM))


def elimination_reason(parent: str, evolved: str, operator: str, cfg: EvolConfig) -> str | None:
    """Why an evolution failed (a short key, then detail), or None if it survives."""
    low = evolved.lower()
    if not evolved.strip():
        return "empty: no evolved question in the reply"
    if any(w in low for w in _REFUSALS):
        return "refusal: the reply refuses or apologises"
    if any(w in low for w in _PROMPT_WORDS) or copies_prompt(evolved, operator):
        return "prompt_words: copies the evolving prompt's wording"
    score = rouge_l(parent, evolved)
    if score >= cfg.max_copy_similarity:
        return f"copied: ROUGE-L {score:.3f} against the parent"
    if operator == "breadth":
        if score >= cfg.breadth_max_similarity:
            return f"not_new: ROUGE-L {score:.3f} against the parent (breadth)"
        return None
    names = function_names(parent)
    if names and names[0] not in evolved:
        return f"lost_information: the function `{names[0]}` is gone"
    n_parent, n_evolved = len(rouge_tokenize(parent)), len(rouge_tokenize(evolved))
    if n_evolved <= n_parent:
        return f"shorter: {n_evolved} words, the parent has {n_parent}"
    return None


class EvolInstructGenerator(LLMStage):
    """Evolve seed-task instructions for `cfg.rounds` rounds (see module docstring)."""

    name = STRATEGY
    inputs = ("instruction",)
    outputs = ("instruction", "op")

    def __init__(self, endpoint: LLMEndpoint, cfg: LLMConfig, cache_path: str | None,
                 evol: EvolConfig, *, seed: int) -> None:
        super().__init__(endpoint, cfg, cache_path, seed=seed)
        self.evol = evol
        self.json_mode = cfg.response_format == "json_schema"

    def accepts(self, sample: Sample) -> bool:
        """Its round-0 seed-task samples."""
        return sample.strategy == STRATEGY and sample.round == 0

    def process_batch(self, samples: list[Sample]) -> list[Sample]:
        """Run the rounds for the batch's seeds (consumed: they are not returned)."""
        current = samples
        out: list[Sample] = []
        for rnd in range(1, self.evol.rounds + 1):
            if not current:
                break
            requests = []
            for parent in current:
                op = choose_operator(parent.id, rnd, self.evol.operators)
                self.counters[f"op_{op}"] += 1
                requests.append(Sample(strategy=STRATEGY, parent_id=parent.id,
                                       seed_ref=parent.seed_ref, round=rnd, op=f"evol:{op}",
                                       instruction=parent.instruction,
                                       id=content_hash(STRATEGY, parent.id, rnd)))
            results = super().process_batch(requests)
            out.extend(results)
            current = [s for s in results if not s.rejected]
        return out

    def build_messages(self, sample: Sample) -> list[dict[str, str]]:
        content = render_prompt(sample.instruction, sample.op.removeprefix("evol:"),
                                self.json_mode)
        return [{"role": "user", "content": content}]

    def request_params(self, sample: Sample) -> dict[str, Any]:
        if not self.json_mode:
            return {}
        return {"response_format": schema_response_format(self.cfg.backend, "evol",
                                                          EVOL_SCHEMA)}

    def parse_reply(self, sample: Sample, reply: ChatReply) -> list[Sample]:
        """The evolved instruction, or a rejected sample saying why; never raises."""
        text = reply.text or ""
        op = (sample.op or "").removeprefix("evol:")
        self.counters["generated"] += 1
        child = Sample(strategy=STRATEGY, parent_id=sample.parent_id, seed_ref=sample.seed_ref,
                       round=sample.round, op=sample.op, model=sample.model)
        evolved = parse_evolved(reply_question(text, self.json_mode), op)
        if not evolved:
            child.id = content_hash(sample.id, "rejected", text)
            return [child.reject(self.name, RejectReason.UNPARSEABLE,
                                 f"no evolved question; reply: {text[:REPLY_EXCERPT_CHARS]}")]
        self.counters["parsed"] += 1
        child.instruction = evolved
        child.assign_id()
        why = elimination_reason(sample.instruction, evolved, op, self.evol)
        if why is not None:
            self.counters[f"eliminated_{why.split(':')[0]}"] += 1
            return [child.reject(self.name, RejectReason.FILTERED, f"evolution failed: {why}")]
        self.counters["novel"] += 1
        return [child]


def _sources(ctx: BuildContext) -> list[Sample]:
    return task_samples(ctx.tasks, STRATEGY, ctx.cfg.generation.evol.num_seeds)


def _stages(ctx: BuildContext) -> list[LLMStage]:
    return [EvolInstructGenerator(ctx.endpoint, ctx.cfg.llm, ctx.cache_path,
                                  ctx.cfg.generation.evol, seed=ctx.cfg.seed)]


RECORD = Strategy(name=STRATEGY, sources=_sources, generate=_stages,
                  source_fields=TASK_SOURCE_FIELDS, uses_seed_tasks=True, solved=True,
                  counted_by=STRATEGY)
