"""Self-Instruct (Wang et al. 2022; Code Alpaca): new tasks from in-context examples.

`SelfInstructGenerator` consumes the round-0 seed-task samples of its batch (see
`pipeline.seeds.tasks`) and runs up to `rounds` rounds over them. In each round every seed
sends one request (`prompts/self_instruct.jinja2`) with `examples_per_request` in-context
tasks: the seed itself, `generated_examples` tasks accepted earlier (when there are any)
and the rest drawn from the seed pool, chosen by a seeded RNG so reruns repeat. Each reply
is a numbered list of new tasks (`parse_task_list`). Candidates are filtered in request
order, so the outcome does not depend on which reply arrived first:

- length (`min_words`..`max_words`) and blocked keywords (files, images, network ...):
  rejected as `filtered`;
- novelty: ROUGE-L against every instruction in the pool (seeds and accepted tasks) must
  be below `novelty_threshold`, else `duplicate`. The pool is a `NoveltyIndex` (indexed,
  not a scan of the pool per candidate).

Accepted tasks join the pool and leave the stage as samples with an instruction and no
code (strategy `self_instruct`, parent the seed, `round` = r); `SolveStage` answers them.
Rounds stop once `target` tasks were accepted.

The pool lives in the stage instance, so it is exact with one LLM actor; with several,
each actor has its own pool and `final_novelty_pass` (run by the driver before writing)
applies the same filter across everything the actors kept.

Counters: `generated` (candidate tasks found in replies), `parsed` (those passing the
length and keyword filters), `novel` (accepted), `task_requests`, `over_target`.
"""

from __future__ import annotations

import random
import re
from typing import Any

from pipeline.config import LLMConfig, SelfInstructConfig
from pipeline.llm.client import ChatReply
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.novelty import NoveltyIndex
from pipeline.prompts import render
from pipeline.record import RejectReason, Sample, content_hash
from pipeline.stages.llm_stage import LLMStage
from pipeline.stages.oss_instruct import REPLY_EXCERPT_CHARS

STRATEGY = "self_instruct"
TEMPLATE = "self_instruct.jinja2"

#: The start of one list item: "Task 5:", "**Task 5.**", "### Task 5", "5. ", "5) ".
_ITEM = re.compile(
    r"^\s*(?:#{1,6}\s*)?(?:\*\*|__)?\s*(?:(?:task|exercise|instruction|problem)\s*#?\s*\d+"
    r"|\d+[.)](?=\s))\s*(?:\*\*|__)?\s*[:.)-]?\s*(?:\*\*|__)?\s*(?P<rest>.*)$", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
#: A line of unfenced code: a task's prose ends there.
_CODE_LINE = re.compile(r"^\s*(?:def |class |import |from \S+ import |>>>|@\w|\"\"\"|"
                        r"return\b|print\()")


def parse_task_list(text: str) -> list[str]:
    """The tasks of a numbered-list reply, one string each; code is dropped.

    A task is its marker line plus the prose lines after it, up to the next marker, code
    fence or line of code. Markers count even inside a fence (then as the marker line
    alone): small models open a bare fence around the whole list, write the tasks as
    `# Task 1: ...` comments in one code block, or put a solution under every task. Text
    before the first marker is preamble; a reply without any marker is one candidate.
    """
    items: list[list[str]] = []
    collecting = True
    preamble: list[str] = []
    in_code = False
    for line in (text or "").replace("\r\n", "\n").splitlines():
        m = _ITEM.match(line)
        if m is not None:
            items.append([m.group("rest")])
            collecting = not in_code
        elif _FENCE.match(line):
            collecting = False
            in_code = not in_code
        elif _CODE_LINE.match(line):
            collecting = False
        elif items and collecting:
            items[-1].append(line)
        elif not items and not in_code:
            preamble.append(line)
    if not items:
        items = [preamble]
    out = []
    for parts in items:
        task = re.sub(r"\s+", " ", " ".join(p.strip() for p in parts)).strip()
        task = re.sub(r"^(?:\*\*|__)|(?:\*\*|__)$", "", task).strip()
        if task:
            out.append(task)
    return out


def keyword_pattern(keywords: list[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern matching any keyword as a whole word."""
    if not keywords:
        return None
    alts = "|".join(re.escape(k) for k in sorted(keywords, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alts})(?!\w)", re.IGNORECASE)


def filter_reason(task: str, cfg: SelfInstructConfig,
                  blocked: re.Pattern[str] | None = None) -> str | None:
    """Why a candidate fails the length or keyword filter, or None if it passes."""
    words = len(task.split())
    if words < cfg.min_words:
        return f"too short: {words} words < min_words {cfg.min_words}"
    if words > cfg.max_words:
        return f"too long: {words} words > max_words {cfg.max_words}"
    if blocked is None:
        blocked = keyword_pattern(cfg.blocked_keywords)
    m = blocked.search(task) if blocked is not None else None
    if m is not None:
        return f"blocked keyword {m.group(0)!r}"
    return None


class SelfInstructGenerator(LLMStage):
    """New task instructions from seeds and earlier accepted tasks (see module docstring)."""

    name = STRATEGY
    inputs = ("instruction",)
    outputs = ("instruction",)

    def __init__(self, endpoint: LLMEndpoint, cfg: LLMConfig, cache_path: str | None,
                 si: SelfInstructConfig, seed_instructions: list[str], *, seed: int = 0) -> None:
        super().__init__(endpoint, cfg, cache_path, seed=seed)
        self.si = si
        self.seed_instructions = list(seed_instructions)
        self.accepted: list[str] = []
        self._index: NoveltyIndex | None = None  # built on first use, in the worker
        self._examples: dict[int, list[str]] = {}  # request sample (by identity) -> examples

    @property
    def index(self) -> NoveltyIndex:
        """The novelty pool: every seed instruction, then every accepted task."""
        if self._index is None:
            self._index = NoveltyIndex(self.si.novelty_threshold)
            for text in [*self.seed_instructions, *self.accepted]:
                self._index.add(text)
        return self._index

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_index"] = None  # rebuilt from seed_instructions + accepted in the worker
        return state

    def choose_examples(self, slot: Sample, rnd: int) -> list[str]:
        """In-context tasks for one request: the seed, recent accepted tasks, other seeds."""
        rng = random.Random(content_hash(self.seed, slot.id, rnd))
        k = self.si.examples_per_request
        n_gen = min(self.si.generated_examples, len(self.accepted), k - 1)
        gen = rng.sample(self.accepted, n_gen) if n_gen else []
        others = [t for t in self.seed_instructions if t != slot.instruction]
        seeds = rng.sample(others, min(k - 1 - n_gen, len(others)))
        examples = [slot.instruction, *seeds, *gen]
        return examples

    def process_batch(self, samples: list[Sample]) -> list[Sample]:
        """Run the rounds for the batch's seeds; other samples pass through."""
        slots = [s for s in samples if s.strategy == STRATEGY and s.round == 0]
        out = [s for s in samples if not (s.strategy == STRATEGY and s.round == 0)]
        blocked = keyword_pattern(self.si.blocked_keywords)
        for rnd in range(1, self.si.rounds + 1):
            if not slots or len(self.accepted) >= self.si.target:
                break
            requests = []
            for slot in slots:
                req = Sample(strategy=STRATEGY, parent_id=slot.id, seed_ref=slot.seed_ref,
                             round=rnd, id=content_hash(STRATEGY, slot.id, rnd))
                self._examples[id(req)] = self.choose_examples(slot, rnd)
                requests.append(req)
            self.counters["task_requests"] += len(requests)
            try:
                candidates = super().process_batch(requests)
            finally:
                for req in requests:
                    self._examples.pop(id(req), None)
            out.extend(self._filter(candidates, blocked))
        return out

    def _filter(self, candidates: list[Sample], blocked: re.Pattern[str] | None) -> list[Sample]:
        """Apply length, keyword and novelty filters in order; accepted tasks join the pool."""
        out = []
        for cand in candidates:
            if cand.rejected:
                out.append(cand)
            elif len(self.accepted) >= self.si.target:
                self.counters["over_target"] += 1
            else:
                out.append(self._judge(cand, blocked))
        return out

    def _judge(self, cand: Sample, blocked: re.Pattern[str] | None) -> Sample:
        """The candidate, accepted into the pool or rejected.

        A rejected candidate gets an id of its own: a reply that repeats a task it just
        proposed must not share (and, at deduplication, replace) the accepted one's id.
        """
        why = filter_reason(cand.instruction, self.si, blocked)
        reason = RejectReason.FILTERED
        if why is None:
            self.counters["parsed"] += 1
            score, item = self.index.max_similarity(cand.instruction)
            if score < self.si.novelty_threshold:
                self.index.add(cand.instruction)
                self.accepted.append(cand.instruction)
                self.counters["novel"] += 1
                return cand
            reason = RejectReason.DUPLICATE
            why = (f"ROUGE-L {score:.3f} >= {self.si.novelty_threshold} against pool item: "
                   f"{self._pool_text(item)[:200]}")
        cand.id = content_hash(cand.id, "rejected", reason.value)
        return cand.reject(self.name, reason, why)

    def _pool_text(self, item: int | None) -> str:
        if item is None:
            return ""
        n_seeds = len(self.seed_instructions)
        return self.seed_instructions[item] if item < n_seeds else self.accepted[item - n_seeds]

    def build_messages(self, sample: Sample) -> list[dict[str, str]] | None:
        examples = self._examples.get(id(sample))
        if examples is None:
            return None
        return [{"role": "user", "content": render(TEMPLATE, examples=examples,
                                                   num_tasks=self.si.tasks_per_request)}]

    def parse_reply(self, sample: Sample, reply: ChatReply) -> list[Sample]:
        """Candidate task samples (unfiltered), or one rejected sample; never raises."""
        text = reply.text or ""
        tasks = parse_task_list(text)
        if not tasks:
            rej = Sample(strategy=STRATEGY, parent_id=sample.parent_id, seed_ref=sample.seed_ref,
                         round=sample.round, id=content_hash(sample.id, "rejected", text))
            return [rej.reject(self.name, RejectReason.UNPARSEABLE,
                               f"no task found; reply: {text[:REPLY_EXCERPT_CHARS]}")]
        out = []
        for task in tasks:
            self.counters["generated"] += 1
            cand = Sample(strategy=STRATEGY, parent_id=sample.parent_id,
                          seed_ref=sample.seed_ref, round=sample.round, instruction=task)
            cand.assign_id()
            out.append(cand)
        return out


def final_novelty_pass(samples: list[Sample], seed_instructions: list[str],
                       threshold: float) -> int:
    """Pool-wide novelty filter over kept Self-Instruct samples, run by the driver.

    Several LLM actors each hold their own pool; this applies the same ROUGE-L rule to
    everything they kept together (seeds first, then samples by round and id). Candidates
    of one instruction (same parent, same text) count once. Returns how many it rejected.
    """
    index = NoveltyIndex(threshold)
    for text in seed_instructions:
        index.add(text)
    kept = sorted((s for s in samples if s.strategy == STRATEGY and not s.rejected),
                  key=lambda s: (s.round, s.id))
    owner: dict[str, str | None] = {}
    dropped = 0
    for s in kept:
        if s.instruction in owner:
            if owner[s.instruction] != s.parent_id:
                s.reject("novelty", RejectReason.DUPLICATE, "same instruction as another "
                         "actor's task")
                dropped += 1
            continue
        if not index.add_if_novel(s.instruction):
            s.reject("novelty", RejectReason.DUPLICATE,
                     f"ROUGE-L >= {threshold} against the pool of all actors")
            dropped += 1
            continue
        owner[s.instruction] = s.parent_id
    return dropped
