"""The languages the pipeline generates data in, and every seam that differs between them.

A `LanguageSpec` holds what the rest of the pipeline asks of a language: which markdown
fences carry its code in a reply and which one the dataset's responses use; the
tree-sitter grammar and the node types that seed snippets are cut from; the source file
suffixes a seed directory is searched for; the checks that turn a reply's solution and
tests into runnable code (`check`); how the sandbox is handed the tests (`sandbox_tests`;
the runner then runs them by the spec's `name`, see pipeline/sandbox/runner/); and the
OSS-Instruct prompt templates. Which strategies generate in a language is each
strategy's record's `languages` (`pipeline.stages.strategy.Strategy`).

Adding a language is one spec here, its checks (a module like `javascript.py`), its
prompt templates under `prompts/<name>/`, its branch in the sandbox runner, and its name in
the `languages` of the strategies that support it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import tree_sitter_javascript
import tree_sitter_python
from tree_sitter import Language, Parser

from pipeline import codecheck
from pipeline.languages import javascript
from pipeline.record import RejectReason

#: A checked reply: (solution code, tests) ready to run, or (reason, detail) why not.
CodeCheck = tuple[str, str] | tuple[RejectReason, str]


@dataclass(frozen=True)
class LanguageSpec:
    """Everything that differs between languages; see the module docstring."""

    name: str
    #: The name in messages ("no Python code block found").
    title: str
    #: Fence tags whose blocks hold this language's code in a reply ("" is a bare fence).
    fence_tags: frozenset[str]
    #: The fence tag of the solution block in the dataset's responses.
    response_tag: str
    #: Returns the tree-sitter language pointer (a grammar package's `language`).
    grammar: Callable[[], Any]
    #: Node types of a seed snippet: functions and classes, at the top level.
    definition_types: tuple[str, ...]
    #: Wrapper node type -> field holding the definition (decorators, `export`).
    wrapper_types: Mapping[str, str]
    #: Definitions whose members are candidates too (classes), and the members' types.
    container_types: tuple[str, ...]
    member_types: tuple[str, ...]
    #: Why a seed snippet is no good ("dropped_syntax_error", "dropped_stub") or None.
    snippet_problem: Callable[[str], str | None]
    #: Source file suffixes of a seed directory.
    suffixes: tuple[str, ...]
    #: Names of the functions and classes a piece of code defines at top level.
    top_level_names: Callable[[str], set[str]]
    #: Finds the function names a prompt's format example defines (copy detection).
    example_definition: re.Pattern[str]
    #: (solution, tests) of a parsed reply -> `CodeCheck`: split, tidied and checked.
    check: Callable[[str, str], CodeCheck]
    #: Tests as the sandbox runner takes them in a request's "tests".
    sandbox_tests: Callable[[str], Any]
    #: OSS-Instruct templates under prompts/, by `llm.response_format`.
    oss_instruct_templates: Mapping[str, str]


def _as_is(tests: str) -> str:
    return tests


def _python_snippet_problem(snippet: str) -> str | None:
    # The Python checks live with seed extraction, which imports this module.
    from pipeline.seeds.snippets import python_snippet_problem

    return python_snippet_problem(snippet)


PYTHON = LanguageSpec(
    name="python",
    title="Python",
    fence_tags=frozenset({"", "python", "py", "python3", "py3", "pycon", "ipython"}),
    response_tag="python",
    grammar=tree_sitter_python.language,
    definition_types=("function_definition", "class_definition"),
    wrapper_types=MappingProxyType({"decorated_definition": "definition"}),
    container_types=("class_definition",),
    member_types=("function_definition",),
    snippet_problem=_python_snippet_problem,
    suffixes=(".py",),
    top_level_names=codecheck.top_level_names,
    example_definition=re.compile(r"\bdef\s+(\w+)\s*\("),
    check=codecheck.check_solution,
    sandbox_tests=_as_is,
    oss_instruct_templates=MappingProxyType({"markdown": "oss_instruct.jinja2",
                                             "json_schema": "oss_instruct_json.jinja2"}),
)

JAVASCRIPT = LanguageSpec(
    name="javascript",
    title="JavaScript",
    fence_tags=frozenset({"", "javascript", "js", "node", "nodejs", "mjs", "cjs"}),
    response_tag="javascript",
    grammar=tree_sitter_javascript.language,
    definition_types=("function_declaration", "generator_function_declaration",
                      "class_declaration"),
    wrapper_types=MappingProxyType({"export_statement": "declaration"}),
    container_types=("class_declaration",),
    member_types=("method_definition",),
    snippet_problem=javascript.snippet_problem,
    suffixes=(".js", ".mjs", ".cjs"),
    top_level_names=javascript.top_level_names,
    example_definition=re.compile(r"\bfunction\s+(\w+)\s*\("),
    check=javascript.check_solution,
    sandbox_tests=javascript.sandbox_tests,
    oss_instruct_templates=MappingProxyType({
        "markdown": "javascript/oss_instruct.jinja2",
        "json_schema": "javascript/oss_instruct_json.jinja2"}),
)

#: Every supported language by name; `generation.language` takes these names.
LANGUAGES: Mapping[str, LanguageSpec] = MappingProxyType(
    {spec.name: spec for spec in (PYTHON, JAVASCRIPT)})


def get_language(name: str) -> LanguageSpec:
    """The spec of `name`; a ValueError that lists the supported ones otherwise."""
    try:
        return LANGUAGES[name]
    except KeyError:
        raise ValueError(f"unsupported language {name!r}; supported: "
                         f"{', '.join(LANGUAGES)}") from None


@lru_cache(maxsize=len(LANGUAGES))
def parser_for(name: str) -> Parser:
    """A tree-sitter parser for language `name` (cached per process)."""
    return Parser(Language(get_language(name).grammar()))
