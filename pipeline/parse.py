"""Parse a model's problem/solution/tests reply, markdown or JSON, as messy as it comes.

Small models vary the headers (`### Problem`, `**Problem:**`, `1. Problem`, `Problem:`),
the fences (```python, ```py, bare ```, a missing closing fence), put the tests inside the
solution block or under `if __name__ == "__main__":`, and copy the solution into the
tests. `parse_markdown_reply` and `parse_json_reply` find the three parts; `finish` moves
test code out of the solution, drops redefinitions of the solution from the tests, and
checks that both parse, that there is a test, and that the tests call the solution.
Each takes a `language` (default "python"): its spec (`pipeline.languages`) says which
fences hold code and does the checks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pipeline.languages import PYTHON, get_language
from pipeline.record import RejectReason


@dataclass(frozen=True)
class ParsedReply:
    """The three parts of a usable reply, plus prose that explained the solution."""

    problem: str
    solution: str
    tests: str
    explanation: str = ""


@dataclass(frozen=True)
class ParseFailure:
    """Why a reply is unusable: a RejectReason and a human-readable detail."""

    reason: RejectReason
    detail: str


ParseResult = ParsedReply | ParseFailure

_FENCE = re.compile(r"^\s*(?P<fence>`{3,}|~{3,})\s*(?P<tag>[\w+.-]*)[^`]*$")
_SECTION_WORDS = {
    "problem statement": "problem", "problem description": "problem", "problem": "problem",
    "task": "problem", "question": "problem", "instruction": "problem",
    "solution": "solution", "implementation": "solution", "code": "solution",
    "unit tests": "tests", "test cases": "tests", "tests": "tests", "testing": "tests",
    "test": "tests", "explanation": "explanation",
}
_MARKUP = re.compile(r"^(?:#{1,6}\s*|\*\*|__|\d+\s*[.)]\s*|(?:step|part)\s*\d+\s*[:.)-]?\s*)+",
                     re.IGNORECASE)
_HEADER = re.compile(
    r"(?P<word>" + "|".join(sorted(_SECTION_WORDS, key=len, reverse=True)) + r")\b"
    r"\s*(?:\*\*|__)?\s*(?P<colon>:)?\s*(?:\*\*|__)?\s*(?P<rest>.*)$",
    re.IGNORECASE,
)


@dataclass
class _Section:
    kind: str
    prose: list[str]
    code: list[str]
    lead: int | None = None  # how many prose lines came before the first code block


def _header(line: str) -> tuple[str, str] | None:
    """(section kind, text after the header) when `line` is a section header."""
    stripped = line.strip()
    core = _MARKUP.sub("", stripped)
    marked = core != stripped
    m = _HEADER.match(core)
    if m is None:
        return None
    rest = m.group("rest").strip()
    if not (marked or m.group("colon")) or (rest and not m.group("colon")):
        return None  # plain prose that happens to start with "Solution ..."
    return _SECTION_WORDS[m.group("word").lower()], rest


def _sections(text: str, tags: frozenset[str] = PYTHON.fence_tags) -> list[_Section]:
    """Split a reply into sections by header; code blocks (fences tagged with one of
    `tags`) are collected per section."""
    sections = [_Section("preamble", [], [])]
    block: list[str] | None = None
    fence = ""
    keep = True
    for line in text.splitlines():
        if block is not None:
            stripped = line.strip()
            if stripped.startswith(fence[0] * 3) and stripped.strip(fence[0]) == "":
                if keep:
                    sections[-1].code.append("\n".join(block))
                    if sections[-1].lead is None:
                        sections[-1].lead = len(sections[-1].prose)
                block = None
            else:
                block.append(line)
            continue
        m = _FENCE.match(line)
        if m is not None:
            block, fence = [], m.group("fence")
            keep = m.group("tag").lower() in tags
            continue
        header = _header(line)
        if header is not None:
            sections.append(_Section(header[0], [header[1]] if header[1] else [], []))
        else:
            sections[-1].prose.append(line)
    if block is not None and keep and any(s.strip() for s in block):
        sections[-1].code.append("\n".join(block))  # no closing fence: take it to the end
    return sections


def _first_problem(sections: list[_Section]) -> list[_Section]:
    """Sections up to a second problem: small models often go on with more triples."""
    seen_code_section = False
    for i, section in enumerate(sections):
        if section.kind == "problem" and seen_code_section:
            return sections[:i]
        seen_code_section = seen_code_section or section.kind in ("solution", "tests")
    return sections


def _dedent_block(code: str) -> str:
    lines = code.splitlines()
    indent = min((len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()), default=0)
    return "\n".join(ln[indent:] for ln in lines).strip("\n")


def _prose(lines: list[str]) -> str:
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def parse_markdown_reply(text: str, language: str = "python") -> ParseResult:
    """Find problem, solution and tests in a markdown reply (see module docstring)."""
    if not text or not text.strip():
        return ParseFailure(RejectReason.UNPARSEABLE, "empty reply")
    spec = get_language(language)
    sections = _first_problem(_sections(text.replace("\r\n", "\n"), spec.fence_tags))
    kinds = {s.kind for s in sections}
    problem = next((_prose(s.prose) for s in sections if s.kind == "problem" and
                    _prose(s.prose)), "")
    if not problem and "problem" not in kinds:
        preamble = sections[0]
        problem = _prose(preamble.prose[:preamble.lead])  # no header: prose before the code
    solution_blocks = [c for s in sections if s.kind == "solution" for c in s.code]
    test_blocks = [c for s in sections if s.kind == "tests" for c in s.code]
    if not solution_blocks:
        solution_blocks = [c for s in sections if s.kind != "tests" for c in s.code]
    explanation = _prose([ln for s in sections if s.kind in ("solution", "explanation")
                          for ln in s.prose])
    if not problem:
        return ParseFailure(RejectReason.UNPARSEABLE, "no problem statement found")
    if not solution_blocks:
        return ParseFailure(RejectReason.UNPARSEABLE, f"no {spec.title} code block found")
    return finish(problem, "\n\n".join(_dedent_block(c) for c in solution_blocks),
                  "\n\n".join(_dedent_block(c) for c in test_blocks), explanation, language)


def _strip_fences(code: str, tags: frozenset[str] = PYTHON.fence_tags) -> str:
    """Code from a JSON field, without the markdown fences some models add anyway."""
    blocks = [c for s in _sections(code, tags) for c in s.code]
    return "\n\n".join(_dedent_block(b) for b in blocks) if blocks else code.strip()


def _field(obj: dict, *names: str) -> str:
    lowered = {str(k).lower(): v for k, v in obj.items()}
    for name in names:
        value = lowered.get(name)
        if isinstance(value, list):
            return "\n".join(str(v) for v in value if v is not None)
        if value is not None:
            return str(value)
    return ""


_DECODER = json.JSONDecoder(strict=False)  # strict=False: raw newlines inside strings
#: Closers tried on an object cut short (no closing brace; often a missing final `}`).
_CLOSERS = ("}", "]}", '"]}', '"}')


def first_json_object(text: str) -> dict | None:
    """The first JSON object in `text`; an unclosed one is closed if that makes it valid."""
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = _DECODER.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    start = text.find("{")
    tail = re.sub(r"\s*(```)?\s*$", "", text[start:]) if start >= 0 else ""
    for closer in _CLOSERS if tail else ():
        try:
            obj = json.loads(tail + closer, strict=False)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def parse_json_reply(text: str, language: str = "python") -> ParseResult:
    """Find problem, solution and tests in a JSON reply.

    Tolerates code fences around the object, text before or after it, raw newlines inside
    strings, and `tests` given as one string or a list of statements.
    """
    if not text or not text.strip():
        return ParseFailure(RejectReason.UNPARSEABLE, "empty reply")
    obj = first_json_object(text)
    if obj is None:
        return ParseFailure(RejectReason.UNPARSEABLE, "no JSON object in the reply "
                            "(truncated, or not JSON)")
    tags = get_language(language).fence_tags
    problem = _field(obj, "problem", "problem_statement", "question", "instruction").strip()
    solution = _strip_fences(_field(obj, "solution", "code"), tags)
    tests = _strip_fences(_field(obj, "tests", "test", "unit_tests", "test_cases"), tags)
    if not problem:
        return ParseFailure(RejectReason.UNPARSEABLE, "JSON has no 'problem'")
    if not solution:
        return ParseFailure(RejectReason.UNPARSEABLE, "JSON has no 'solution'")
    return finish(problem, solution, tests, language=language)


def finish(problem: str, solution: str, tests: str, explanation: str = "",
           language: str = "python") -> ParseResult:
    """Separate and check solution and tests (the language's `check`); the common tail of
    both reply formats."""
    first, second = get_language(language).check(solution, tests)
    if isinstance(first, RejectReason):
        return ParseFailure(first, second)
    return ParsedReply(problem.strip(), first, second, explanation.strip())
