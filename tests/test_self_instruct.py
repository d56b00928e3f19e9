"""Self-Instruct: task-list parsing and filters on real Qwen replies, the novelty pool on
known near-duplicates, and the rounds end to end over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import LLMConfig, SelfInstructConfig
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.novelty import NoveltyIndex
from pipeline.record import Sample
from pipeline.seeds.tasks import load_seed_tasks, task_samples
from pipeline.stages.self_instruct import (
    SelfInstructGenerator,
    filter_reason,
    load_topics,
    parse_task_list,
    parse_tasks,
)
from tests.fake_openai_server import FakeOpenAIServer, Reply

FIXTURE = (Path(__file__).parent / "fixtures" / "replies" / "strategies"
           / "qwen05b_self_instruct.json")
REPLIES = [r["reply"] for r in json.loads(FIXTURE.read_text())]
TASKS = load_seed_tasks()
SEED_TEXTS = [t.instruction for t in TASKS]


def test_real_replies_parse_into_tasks_without_code() -> None:
    # 1: a bare fence around the list and a solution under every task (all copies).
    first = parse_task_list(REPLIES[0])
    assert len(first) == 5 and first[1].startswith("Create `make_acronym(phrase)`")
    assert not any("def " in t or "```" in t for t in first)
    # 2: "Task N:" lines with a bare code block after each.
    second = parse_task_list(REPLIES[1])
    assert len(second) == 4 and second[2].startswith("Return how many steps the Collatz")
    # 3: "### Task N: Title" headers, cut off by max_tokens inside a code block.
    third = parse_task_list(REPLIES[2])
    assert third[1] == "Compute the Levenshtein Distance between Two Strings"
    assert len(third) == 4


def test_parse_task_list_variants() -> None:
    text = ("Sure! Here are new tasks:\n1. Write `f(x)` that doubles x and returns it.\n"
            "2) Write `g(x)` that\n   negates a number.\n**Task 3:** Sum `xs`.\n")
    assert parse_task_list(text) == ["Write `f(x)` that doubles x and returns it.",
                                     "Write `g(x)` that negates a number.", "Sum `xs`."]
    assert parse_task_list("Write `f(x)` that doubles x.") == ["Write `f(x)` that doubles x."]
    assert parse_task_list("x = 1.5 * y\n") == ["x = 1.5 * y"]  # "1.5" is not a marker
    assert parse_task_list("") == []


def test_filters_on_real_replies_against_the_seed_pool() -> None:
    """The 0.5B model mostly echoes its in-context examples: the pool catches them."""
    cfg = SelfInstructConfig()
    pool = NoveltyIndex(cfg.novelty_threshold)
    for text in SEED_TEXTS:
        pool.add(text)
    verdicts = []
    for reply in REPLIES:
        for task in parse_task_list(reply):
            why = filter_reason(task, cfg)
            verdicts.append(why.split(":")[0].split(" ")[0] if why else
                            "novel" if pool.is_novel(task) else "duplicate")
    assert verdicts == ["blocked", "blocked", "duplicate", "duplicate", "blocked",
                        "duplicate", "duplicate", "duplicate", "duplicate", "duplicate",
                        "too", "too", "novel"]


def test_filter_reason_length_and_keywords() -> None:
    cfg = SelfInstructConfig(min_words=4, max_words=12)
    assert filter_reason("Sum a list.", cfg) == "too short: 3 words < min_words 4"
    assert filter_reason("word " * 13, cfg).startswith("too long: 13 words")
    assert filter_reason("Read a FILE and count its lines.", cfg) == "blocked keyword 'FILE'"
    assert filter_reason("Open a GUI window with a button.", cfg) == "blocked keyword 'GUI'"
    assert filter_reason("Parse the profile string into fields.", cfg) is None  # not "file"
    assert filter_reason("Call input() and echo the line.", cfg) == "blocked keyword 'input()'"


def test_novelty_on_known_near_duplicates() -> None:
    pool = NoveltyIndex(0.7)
    for text in SEED_TEXTS:
        pool.add(text)
    seed = TASKS[0].instruction  # collapse_whitespace
    reworded = seed.replace("Write a function", "Implement a function").replace(
        "replaces every", "replaces each")
    assert not pool.is_novel(reworded)
    assert not pool.is_novel(seed.upper())  # ROUGE tokens are lower-cased
    assert pool.is_novel("Write a function `median_of_three(a, b, c)` that returns the "
                         "middle value of three numbers without sorting.")
    assert pool.add_if_novel("Return the number of set bits in the binary form of an int.")
    assert not pool.add_if_novel("Return the number of set bits in the binary form of an integer.")


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def _stage(base_url: str, **si: object) -> SelfInstructGenerator:
    cfg = LLMConfig(backend="openai", base_url=base_url, max_retries=0, cache=False)
    return SelfInstructGenerator(LLMEndpoint(base_url, "fake-model"), cfg, None,
                                 SelfInstructConfig(**si), SEED_TEXTS, seed=3)


NEW = [
    "Write `second_largest(xs)` returning the second largest distinct value of a list, or None.",
    "Given a string of brackets, decide with `balanced(s)` whether every opener is closed.",
    "Implement `rle(s)` that run-length encodes a string like aaab into a3b1 form.",
    "Create `matrix_transpose(m)`: swap the rows and columns of a rectangular list of lists.",
    "Return the day of the year for an ISO date string in `day_of_year(iso)`.",
]


def test_rounds_filter_and_grow_the_pool_over_http(server: FakeOpenAIServer) -> None:
    replies = {
        # round 1, seed 0: an echo of a seed, a short one, a blocked one, two new ones
        (0, 1): f"Task 5: {SEED_TEXTS[0]}\nTask 6: Sum it.\nTask 7: Read a file of numbers "
                f"and return their sum please.\nTask 8: {NEW[0]}\nTask 9: {NEW[1]}",
        # round 1, seed 1: a near-duplicate of the first reply's task and a new one
        (1, 1): f"1. {NEW[0].replace('returning', 'that gives')}\n2. {NEW[2]}",
        (0, 2): "I cannot help with that.",  # no marker: one candidate, too short
        (1, 2): f"1. {NEW[3]}\n2. {NEW[4]}",  # the target (4) is reached after NEW[3]
    }

    def handler(body: dict) -> Reply:
        prompt = body["messages"][0]["content"]
        slot = 0 if f"Task 1: {SEED_TEXTS[0]}" in prompt else 1
        return Reply(text=replies[(slot, 2 if any(t in prompt for t in NEW) else 1)])

    server.handler = handler
    slots = task_samples(TASKS, "self_instruct", 2)
    passing = Sample(strategy="oss_instruct", instruction="x", code="def f(): pass")
    stage = _stage(server.base_url, target=4, rounds=3, examples_per_request=3,
                   generated_examples=1, min_words=6, prompt_style="list")
    try:
        out = stage([*slots, passing])
    finally:
        stage.teardown()
    assert len(server.requests) == 4  # round 3 never starts: the target is reached
    kept = [s for s in out if not s.rejected and s.strategy == "self_instruct"]
    assert [s.instruction for s in kept] == [NEW[0], NEW[1], NEW[2], NEW[3]]
    assert [s.round for s in kept] == [1, 1, 1, 2]
    assert {s.parent_id for s in kept} == {slots[0].id, slots[1].id}
    assert all(not s.code and s.id for s in kept)
    assert passing in out and not any(s in out for s in slots)  # seeds are consumed
    reasons = sorted(s.reject_reason.value for s in out if s.rejected)
    # three failed the length or keyword filters, one came after the target was reached
    assert reasons == ["duplicate", "duplicate", "filtered", "filtered", "filtered", "filtered"]
    assert sum("over target" in s.reject_detail for s in out if s.rejected) == 1
    assert stage.counters["generated"] == 10 and stage.counters["parsed"] == 6
    assert stage.counters["novel"] == 4 and stage.counters["over_target"] == 1
    # round 2's prompts show one task accepted in round 1 next to the seeds
    round2 = [r["messages"][0]["content"] for r in server.requests[2:]]
    assert all(any(t in p for t in NEW[:3]) for p in round2)
    round1 = [r["messages"][0]["content"] for r in server.requests[:2]]
    for i in (0, 1):  # each seed leads its own request's examples
        assert any(f"Task 1: {SEED_TEXTS[i]}" in prompt for prompt in round1)
    assert len(stage.index) == len(SEED_TEXTS) + 4


def test_seed_task_loader_and_sources(tmp_path: Path) -> None:
    from pipeline.config import parse_config
    from pipeline.run import load_sources
    from pipeline.stages.strategy import BuildContext

    assert len(TASKS) >= 60 and all(t.instruction and t.solution and t.tests for t in TASKS)
    cfg = parse_config({"generation": {"strategies": ["self_instruct", "case2code"],
                                       "self_instruct": {"num_seeds": 3}}})
    sources, provided = load_sources(BuildContext(cfg=cfg))
    assert {"instruction", "code", "tests", "round"} <= provided
    assert [s.strategy for s in sources].count("self_instruct") == 3
    assert [s.strategy for s in sources].count("case2code") == len(TASKS)
    s = sources[0]
    assert (s.round, s.seed_ref, s.seed) == (0, f"seed_tasks:{TASKS[0].id}", "")
    assert s.code == TASKS[0].solution and s.id
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "instruction": "x", "solution": "y", "tests": "z"}\n'
                   '{"id": "b", "instruction": ""}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: missing or empty field\(s\) "
                                         r"\['instruction', 'solution', 'tests'\]"):
        load_seed_tasks(bad)
    with pytest.raises(FileNotFoundError, match="set generation.seed_tasks"):
        load_seed_tasks(tmp_path / "none.jsonl")


def test_real_replies_from_a_run_with_unfenced_code() -> None:
    """Replies cached by a pipeline run: headers with solutions under them, and the whole
    list as `# Task N:` comments inside one code block, docstrings and all."""
    path = FIXTURE.with_name("qwen05b_self_instruct_run.json")
    headed, commented = (r["reply"] for r in json.loads(path.read_text()))
    assert parse_task_list(headed)[0] == "Collapse Whitespace"
    assert parse_task_list(headed)[3].endswith("Write `friday_13ths(year)`.")
    tasks = parse_task_list(commented)
    assert tasks[:3] == ["Implement caesar_shift(text, k)",
                         "Detect whether a directed graph contains a cycle",
                         "josephus_survivor(n, k)"]
    assert not any("def " in t or '"""' in t for t in tasks)


def test_topics_file_and_seeded_choice(tmp_path: Path) -> None:
    topics = load_topics()
    assert len(topics) >= 40 and all(t and not t.startswith("#") for t in topics)
    own = tmp_path / "topics.txt"
    own.write_text("# mine\nbit tricks  # inline comment\n\nqueues\n")
    assert load_topics(own) == ["bit tricks", "queues"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no topics"):
        load_topics(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="topics_file"):
        load_topics(tmp_path / "missing.txt")
    stage = _stage("http://127.0.0.1:9/v1")
    slots = task_samples(TASKS, "self_instruct", 30)
    chosen = [stage.choose_topic(s.id, 1) for s in slots]
    assert chosen == [stage.choose_topic(s.id, 1) for s in slots]  # reruns repeat
    assert len(set(chosen)) >= 15 and set(chosen) <= set(topics)
    assert [stage.choose_topic(s.id, 2) for s in slots] != chosen  # a new round, new topics
    assert _stage("http://127.0.0.1:9/v1", topics=False).choose_topic(slots[0].id, 1) == ""


def test_requests_name_a_topic_and_stop_at_code(server: FakeOpenAIServer) -> None:
    server.handler = lambda body: Reply(text=f"Task 5: {NEW[0]}")
    slots = task_samples(TASKS, "self_instruct", 2)
    for topics, stop in ((True, True), (False, False)):
        server.requests.clear()
        stage = _stage(server.base_url, topics=topics, stop_at_code=stop, rounds=1,
                       prompt_style="list")
        try:
            stage(list(slots))
        finally:
            stage.teardown()
        prompts = [r["messages"][0]["content"] for r in server.requests]
        assert len(prompts) == 2
        topic_list = load_topics()
        assert all(any(f"exercises about {t}, numbered" in p for t in topic_list) == topics
                   for p in prompts)
        assert all(("under ten lines" in p) == topics for p in prompts)
        assert all(("stop" in r) == stop for r in server.requests)
        if stop:
            assert all("```python" in r["stop"] and "\ndef " in r["stop"]
                       for r in server.requests)


def test_json_mode_sends_a_schema_and_reads_the_task_list(server: FakeOpenAIServer) -> None:
    server.handler = lambda body: Reply(text=json.dumps({"tasks": [f"Task 5: {NEW[1]}",
                                                                   NEW[2], 7]}))
    cfg = LLMConfig(backend="openai", base_url=server.base_url, max_retries=0, cache=False,
                    response_format="json_schema")
    stage = SelfInstructGenerator(LLMEndpoint(server.base_url, "fake-model"), cfg, None,
                                  SelfInstructConfig(rounds=1, tasks_per_request=3,
                                                     prompt_style="list"),
                                  SEED_TEXTS, seed=3)
    try:
        out = stage(task_samples(TASKS, "self_instruct", 1))
    finally:
        stage.teardown()
    body = server.requests[0]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and "stop" not in body
    assert fmt["json_schema"]["schema"]["properties"]["tasks"]["maxItems"] == 3
    assert '"tasks"' in body["messages"][0]["content"]
    assert [s.instruction for s in out if not s.rejected] == [NEW[1], NEW[2]]
    # a server that ignored the schema: the numbered list is still read
    assert parse_tasks(f"1. {NEW[3]}\n2. {NEW[4]}", json_mode=True) == [NEW[3], NEW[4]]
    assert parse_tasks('{"tasks": "not a list"}\n1. ' + NEW[0], json_mode=True)[-1] == NEW[0]


def test_dialogue_prompt_shows_examples_as_earlier_turns(server: FakeOpenAIServer) -> None:
    """Default style: few-shot chat, one task per request, topics on every user turn."""
    server.handler = lambda body: Reply(text=NEW[len(server.requests) - 1])
    cfg = LLMConfig(backend="openai", base_url=server.base_url, max_retries=0, cache=False)
    stage = SelfInstructGenerator(
        LLMEndpoint(server.base_url, "fake-model"), cfg, None,
        SelfInstructConfig(rounds=2, examples_per_request=3, generated_examples=1), SEED_TEXTS,
        seed=3, seed_topics=[t.topic for t in TASKS])
    slots = task_samples(TASKS, "self_instruct", 2)
    try:
        out = stage(slots)
    finally:
        stage.teardown()
    assert [s.instruction for s in out if not s.rejected] == NEW[:4]
    first, later = server.requests[0]["messages"], server.requests[2]["messages"]
    assert first[0]["role"] == "system" and "no solution" in first[0]["content"]
    assert [m["role"] for m in first[1:]] == ["user", "assistant"] * 3 + ["user"]
    assert first[2]["content"] == SEED_TEXTS[0]  # the slot's own task leads
    assert first[1]["content"] == f"Write a new exercise about {TASKS[0].topic}."
    assert first[-1]["content"].startswith("Write a new exercise about ")
    topic = stage.choose_topic(slots[0].id, 1)
    assert first[-1]["content"] == f"Write a new exercise about {topic}."
    # round 2 shows a task accepted in round 1, with the topic it was asked for
    shown = [m["content"] for m in later if m["role"] == "assistant"]
    gen = next(t for t in shown if t in NEW[:2])
    asked = later[[m["content"] for m in later].index(gen) - 1]["content"]
    assert asked == f"Write a new exercise about {stage.topic_of[gen]}."
    assert all(r["stop"] == ["```python", "```py\n", "\ndef "] for r in server.requests)


def test_dialogue_in_json_mode_answers_examples_in_json() -> None:
    cfg = LLMConfig(backend="embedded", response_format="json_schema")
    stage = SelfInstructGenerator(LLMEndpoint("http://127.0.0.1:9/v1", "m"), cfg, None,
                                  SelfInstructConfig(examples_per_request=2), SEED_TEXTS,
                                  seed=0)
    messages = stage.dialogue(SEED_TEXTS[:2], "prime numbers")
    assert json.loads(messages[2]["content"]) == {"tasks": [SEED_TEXTS[0]]}
    assert '"tasks"' in messages[0]["content"]
    params = stage.request_params(Sample())
    assert params["response_format"]["schema"]["properties"]["tasks"]["maxItems"] == 1


def test_real_dialogue_replies_are_single_novel_tasks() -> None:
    """Replies to the dialogue prompt from a real run (Qwen 0.5B): one task each, none an
    echo of the seed pool, where the numbered-list prompt's replies mostly were."""
    rows = json.loads((FIXTURE.parent / "qwen05b_self_instruct_dialogue.json").read_text())
    replies = [r["reply"] for r in rows if r["kind"] == "self_instruct"]
    assert len(replies) == 4
    tasks = [parse_tasks(r) for r in replies]
    assert all(len(t) == 1 for t in tasks)
    cfg = SelfInstructConfig()
    pool = NoveltyIndex(cfg.novelty_threshold)
    for text in SEED_TEXTS:
        pool.add(text)
    assert all(filter_reason(t[0], cfg) is None and pool.add_if_novel(t[0]) for t in tasks)
    assert any("`remove_duplicates(items)`" in t[0] for t in tasks)
    # the solve replies of that run, 3 per task, all parse into code and tests
    from pipeline.parse import ParseFailure
    from pipeline.stages.solve import parse_solve_reply

    solved = [parse_solve_reply(r["reply"]) for r in rows if r["kind"] == "solve"]
    assert len(solved) == 12 and not any(isinstance(s, ParseFailure) for s in solved)
