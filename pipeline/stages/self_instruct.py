"""Self-Instruct (Wang et al. 2022; Code Alpaca): new tasks from in-context examples.

`SelfInstructGenerator` consumes the round-0 seed-task samples of its batch (see
`pipeline.seeds.tasks`) and runs up to `rounds` rounds over them. In each round every seed
sends one request with `examples_per_request` in-context tasks: the seed itself,
`generated_examples` tasks accepted earlier (when there are any) and the rest drawn from
the seed pool, chosen by a seeded RNG so reruns repeat. The prompt (`prompt_style`) is
either a few-shot dialogue (default: `prompts/self_instruct_system.jinja2`, then each
example as the answer to a request for its topic, `self_instruct_request.jinja2`, then the
request for the new task: one task per reply) or the paper's numbered list
(`prompts/self_instruct.jinja2`, `tasks_per_request` per reply). With
`topics` on, each request also names one topic (data/self_instruct_topics.txt, seeded
choice) and asks for short tasks about it: without it a 0.5B model mostly copies its
examples. With `stop_at_code`, stop sequences cut a reply where the model starts writing
code, which the prompt did not ask for. Each reply is a numbered list of new tasks
(`parse_task_list`). Candidates are filtered in request
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
each actor has its own pool, and the global step after it
(`pipeline.dedup.SelfInstructNoveltyStep`) applies the same rule across everything the
actors accepted, before the solve stage sees any of it.

Counters: `generated` (candidate tasks found in replies), `parsed` (those passing the
length and keyword filters), `novel` (accepted), `task_requests`, `over_target`.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from pipeline.config import LLMConfig, SelfInstructConfig
from pipeline.dedup import SelfInstructNoveltyStep
from pipeline.llm.client import ChatReply
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.llm.structured import schema_response_format
from pipeline.novelty import NoveltyIndex
from pipeline.prompts import render
from pipeline.record import RejectReason, Sample, content_hash
from pipeline.seeds.tasks import TASK_SOURCE_FIELDS, task_samples
from pipeline.stage import Stage
from pipeline.stages.llm_stage import LLMStage
from pipeline.stages.oss_instruct import REPLY_EXCERPT_CHARS
from pipeline.stages.self_instruct_tasks import (  # noqa: F401 - public API of the strategy
    DEFAULT_TOPICS,
    filter_reason,
    keyword_pattern,
    load_topics,
    parse_task_list,
    parse_tasks,
    tasks_schema,
)
from pipeline.stages.strategy import BuildContext, Strategy

STRATEGY = "self_instruct"
TEMPLATE = "self_instruct.jinja2"
SYSTEM_TEMPLATE = "self_instruct_system.jinja2"
REQUEST_TEMPLATE = "self_instruct_request.jinja2"
#: Where a reply that has moved on from tasks to code is cut (`stop_at_code`).
STOP_AT_CODE = ["```python", "```py\n", "\ndef "]


class SelfInstructGenerator(LLMStage):
    """New task instructions from seeds and earlier accepted tasks (see module docstring)."""

    name = STRATEGY
    inputs = ("instruction",)
    outputs = ("instruction",)

    def __init__(self, endpoint: LLMEndpoint, cfg: LLMConfig, cache_path: str | None,
                 si: SelfInstructConfig, seed_instructions: list[str], *, seed: int,
                 seed_topics: list[str] | None = None) -> None:
        super().__init__(endpoint, cfg, cache_path, seed=seed)
        self.si = si
        self.seed_instructions = list(seed_instructions)
        #: The topic each pool task is about (seed tasks: their `topic`; accepted tasks:
        #: the one they were asked for), shown with it in dialogue prompts.
        self.topic_of: dict[str, str] = dict(zip(self.seed_instructions,
                                                 (t.replace("_", " ") for t in seed_topics or ()),
                                                 strict=False))
        self.accepted: list[str] = []
        self._index: NoveltyIndex | None = None  # built on first use, in the worker
        self._examples: dict[int, tuple[list[str], str]] = {}  # request -> examples, topic
        self.topics = load_topics(si.topics_file) if si.topics else []
        self.json_mode = cfg.response_format == "json_schema"

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

    def choose_topic(self, slot_id: str | None, rnd: int) -> str:
        """The topic of one request: seed slot `slot_id`, round `rnd` ("" if topics are off)."""
        if not self.topics:
            return ""
        return random.Random(content_hash(self.seed, slot_id, rnd, "topic")).choice(self.topics)

    def accepts(self, sample: Sample) -> bool:
        """Its round-0 seed-task samples (each a slot that sends one request per round)."""
        return sample.strategy == STRATEGY and sample.round == 0

    def process_batch(self, samples: list[Sample]) -> list[Sample]:
        """Run the rounds for the batch's seed slots (consumed: they are not returned)."""
        slots = samples
        out: list[Sample] = []
        blocked = keyword_pattern(self.si.blocked_keywords)
        for rnd in range(1, self.si.rounds + 1):
            if not slots or len(self.accepted) >= self.si.target:
                break
            requests = []
            for slot in slots:
                req = Sample(strategy=STRATEGY, parent_id=slot.id, seed_ref=slot.seed_ref,
                             round=rnd, id=content_hash(STRATEGY, slot.id, rnd))
                self._examples[id(req)] = (self.choose_examples(slot, rnd),
                                           self.choose_topic(slot.id, rnd))
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
                # Written as rejected, not lost: the reply did propose it.
                self.counters["over_target"] += 1
                cand.id = content_hash(cand.id, "rejected", "over_target")
                out.append(cand.reject(self.name, RejectReason.FILTERED,
                                       f"over target: {self.si.target} tasks were accepted "
                                       "before this one (generation.self_instruct.target)"))
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
                self.topic_of[cand.instruction] = self.choose_topic(cand.parent_id, cand.round)
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

    def build_messages(self, sample: Sample) -> list[dict[str, str]]:
        examples, topic = self._examples[id(sample)]
        if self.si.prompt_style == "list":
            return [{"role": "user", "content": render(
                TEMPLATE, examples=examples, topic=topic, num_tasks=self.si.tasks_per_request,
                json_mode=self.json_mode)}]
        return self.dialogue(examples, topic)

    def dialogue(self, examples: list[str], topic: str) -> list[dict[str, str]]:
        """Few-shot chat: each example answers a request for its topic; then the new one."""
        messages = [{"role": "system", "content": render(SYSTEM_TEMPLATE,
                                                         json_mode=self.json_mode)}]
        for ex in examples:
            answer = json.dumps({"tasks": [ex]}) if self.json_mode else ex
            ex_topic = self.topic_of.get(ex, "") if self.topics else ""
            messages += [{"role": "user", "content": render(REQUEST_TEMPLATE, topic=ex_topic)},
                         {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": render(REQUEST_TEMPLATE, topic=topic)})
        return messages

    @property
    def tasks_per_reply(self) -> int:
        return self.si.tasks_per_request if self.si.prompt_style == "list" else 1

    def request_params(self, sample: Sample) -> dict[str, Any]:
        if self.json_mode:
            return {"response_format": schema_response_format(
                self.cfg.backend, "self_instruct", tasks_schema(self.tasks_per_reply))}
        return {"stop": list(STOP_AT_CODE)} if self.si.stop_at_code else {}

    def parse_reply(self, sample: Sample, reply: ChatReply) -> list[Sample]:
        """Candidate task samples (unfiltered), or one rejected sample; never raises."""
        text = reply.text or ""
        tasks = parse_tasks(text, self.json_mode)
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



def _sources(ctx: BuildContext) -> list[Sample]:
    si = ctx.cfg.generation.self_instruct
    if si.topics:
        load_topics(si.topics_file)  # a bad file stops the run before the model starts
    return task_samples(ctx.tasks, STRATEGY, si.num_seeds)


def _stages(ctx: BuildContext) -> list[Stage]:
    si = ctx.cfg.generation.self_instruct
    seeds = [t.instruction for t in ctx.tasks]
    return [SelfInstructGenerator(ctx.endpoint, ctx.cfg.llm, ctx.cache_path, si, seeds,
                                  seed=ctx.cfg.seed, seed_topics=[t.topic for t in ctx.tasks]),
            SelfInstructNoveltyStep(si.novelty_threshold, seeds)]


RECORD = Strategy(name=STRATEGY, sources=_sources, generate=_stages,
                  source_fields=TASK_SOURCE_FIELDS, uses_seed_tasks=True, solved=True,
                  counted_by=STRATEGY)
