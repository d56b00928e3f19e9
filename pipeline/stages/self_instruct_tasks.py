"""Self-Instruct candidate tasks: reading them from replies, filtering them, topics.

`parse_task_list` reads a numbered-list reply (messy small-model output included: fences
around the list, a solution under every task); `parse_tasks` also takes the JSON object of
`tasks_schema` (llm.response_format: json_schema). `filter_reason` applies the length and
keyword filters; `load_topics` reads the topic file of dialogue prompts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipeline.config import SelfInstructConfig
from pipeline.parse import first_json_object

#: The bundled topic list (`generation.self_instruct.topics_file` replaces it).
DEFAULT_TOPICS = Path(__file__).resolve().parent.parent.parent / "data" / \
    "self_instruct_topics.txt"
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


def tasks_schema(num_tasks: int) -> dict[str, Any]:
    """JSON schema of a Self-Instruct reply (llm.response_format: json_schema)."""
    return {"type": "object",
            "properties": {"tasks": {"type": "array", "items": {"type": "string"},
                                     "minItems": 1, "maxItems": num_tasks}},
            "required": ["tasks"], "additionalProperties": False}


def parse_tasks(text: str, json_mode: bool = False) -> list[str]:
    """The tasks of a reply: the JSON object's `tasks` in json mode (when there is one),
    else the numbered list (`parse_task_list`)."""
    if json_mode:
        obj = first_json_object(text or "")
        items = obj.get("tasks") if obj else None
        if isinstance(items, list):
            tasks = [re.sub(r"\s+", " ", t).strip() for t in items if isinstance(t, str)]
            return [re.sub(r"^(?:task\s*#?\s*\d+\s*[:.)-]\s*)", "", t, flags=re.I)
                    for t in tasks if t]
    return parse_task_list(text)


def load_topics(path: str | Path | None = None) -> list[str]:
    """The topics of a topic file (one per line, '#' comments), in file order."""
    p = Path(path) if path else DEFAULT_TOPICS
    if not p.is_file():
        raise FileNotFoundError(f"topics file not found: {p} (set "
                                "generation.self_instruct.topics_file to a text file with one "
                                "topic per line, or topics: false)")
    topics = [line.split("#", 1)[0].strip() for line in p.read_text("utf-8").splitlines()]
    topics = [t for t in topics if t]
    if not topics:
        raise ValueError(f"{p}: no topics in the file (one per line; '#' starts a comment)")
    return topics


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
