"""JavaScript checks, with tree-sitter-javascript: replies, seed snippets, sandbox tests.

The sandbox runs a solution as a script and then each top-level test statement, with
node's `assert` module provided as the global `assert` (see
pipeline/sandbox/runner/harness.cjs). So `check_solution` leaves the solution as plain
declarations (asserts moved to the tests, `console.log` usage lines, `module.exports`,
`export` keywords and `require.main === module` blocks removed) and the tests as
statements that call the solution through `assert` (imports of `assert` and of the
solution removed, copies of the solution dropped). `sandbox_tests` splits tests into the
statements the runner counts, by the runner's own rule
(`pipeline.sandbox.runner.testcount.counted`), which also decides when tests are
`no_tests`.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from functools import lru_cache

import tree_sitter_javascript
from tree_sitter import Language, Node, Parser

from pipeline.codecheck import check_reply
from pipeline.record import RejectReason
from pipeline.sandbox.runner.testcount import Statement, counted

#: Function-like nodes whose body is a block of statements.
_FUNCTIONS = ("function_declaration", "generator_function_declaration", "function_expression",
              "generator_function", "arrow_function", "method_definition")
_DECLARATIONS = ("function_declaration", "generator_function_declaration", "class_declaration")
_VARIABLES = ("lexical_declaration", "variable_declaration")
#: Values that make `const f = ...` a function (or class) definition.
_FUNCTION_VALUES = ("arrow_function", "function_expression", "generator_function", "class")
_ASSERT_MODULES = re.compile(r"""^['"](node:)?assert(/strict)?['"]$""")
_RELATIVE_MODULE = re.compile(r"""^['"]\.{1,2}/""")
_MAIN_GUARD = re.compile(r"^\(\s*require\.main\s*===?\s*module\s*\)$")
_TEST_PROBLEMS = {
    RejectReason.NO_TESTS: "no assert call that calls the solution",
    RejectReason.SYNTAX_ERROR: "tests do not parse",
}


@lru_cache(maxsize=1)
def _parser() -> Parser:
    return Parser(Language(tree_sitter_javascript.language()))


def _parse(code: str) -> Node:
    return _parser().parse(code.encode("utf-8")).root_node


def _text(node: Node | None) -> str:
    return node.text.decode("utf-8") if node is not None and node.text else ""


def _walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.named_children:
        yield from _walk(child)


def _statements(root: Node) -> list[Node]:
    """Top-level statements, comments and empty statements left out."""
    return [n for n in root.named_children if n.type not in ("comment", "empty_statement")]


def _call(stmt: Node) -> Node | None:
    """The call of an expression statement `f(...);`, else None."""
    if stmt.type != "expression_statement" or not stmt.named_children:
        return None
    expr = stmt.named_children[0]
    return expr if expr.type == "call_expression" else None


def _callee(call: Node) -> str:
    """`f` for `f(...)`, `a.b` for `a.b(...)`, else ''."""
    func = call.child_by_field_name("function")
    if func is not None and func.type in ("identifier", "member_expression"):
        return _text(func)
    return ""


def _is_assert_call(node: Node) -> bool:
    """`assert(...)` or `assert.<check>(...)` (console.assert does not throw: not a check)."""
    if node.type != "call_expression":
        return False
    callee = _callee(node)
    return callee == "assert" or callee.startswith("assert.")


def _has_check(node: Node) -> bool:
    return any(_is_assert_call(n) for n in _walk(node))


def _unwrap(stmt: Node) -> Node:
    """The declaration of `export ...`, else the statement itself."""
    if stmt.type == "export_statement":
        inner = stmt.child_by_field_name("declaration")
        if inner is not None:
            return inner
    return stmt


def _declared(stmt: Node, functions_only: bool = False) -> set[str]:
    """Names a top-level statement declares (with `functions_only`: functions, classes)."""
    node = _unwrap(stmt)
    if node.type in _DECLARATIONS:
        return {_text(node.child_by_field_name("name"))}
    names: set[str] = set()
    if node.type in _VARIABLES:
        for decl in node.named_children:
            name, value = decl.child_by_field_name("name"), decl.child_by_field_name("value")
            if decl.type != "variable_declarator" or name is None or name.type != "identifier":
                continue
            if not functions_only or (value is not None and value.type in _FUNCTION_VALUES):
                names.add(_text(name))
    return names


def top_level_names(code: str) -> set[str]:
    """Names of the functions and classes `code` defines at top level (`const f = () =>`
    included)."""
    root = _parse(code)
    return set().union(*(_declared(s, functions_only=True) for s in _statements(root)))


def _required_module(stmt: Node) -> str:
    """The module of `import ... from 'm'` or `const x = require('m')`, quoted; else ''."""
    if stmt.type == "import_statement":
        return _text(stmt.child_by_field_name("source"))
    if stmt.type in _VARIABLES:
        for decl in stmt.named_children:
            value = decl.child_by_field_name("value") if decl.type == "variable_declarator" \
                else None
            if value is not None and value.type == "call_expression" \
                    and _callee(value) == "require":
                args = value.child_by_field_name("arguments")
                return _text(args.named_children[0]) if args and args.named_children else ""
    return ""


def _is_exports(stmt: Node) -> bool:
    """`module.exports = ...` or `exports.x = ...`."""
    if stmt.type != "expression_statement" or not stmt.named_children:
        return False
    expr = stmt.named_children[0]
    left = expr.child_by_field_name("left") if expr.type == "assignment_expression" else None
    return left is not None and _text(left).startswith(("module.exports", "exports."))


def _main_guard(stmt: Node) -> Node | None:
    """The block of `if (require.main === module) { ... }`, else None."""
    if stmt.type != "if_statement" or stmt.child_by_field_name("alternative") is not None:
        return None
    cond, block = stmt.child_by_field_name("condition"), stmt.child_by_field_name("consequence")
    if cond is None or block is None or not _MAIN_GUARD.match(_text(cond)):
        return None
    return block


def _block_body(block: Node) -> str:
    """The statements inside `{ ... }`, dedented."""
    inner = _text(block).strip()
    if block.type == "statement_block":
        inner = inner[1:-1]
    return textwrap.dedent(inner.strip("\n")).strip()


def _edit(code: str, edits: list[tuple[Node, str]]) -> str:
    """Replace each node's text with the given text; tidy blank runs."""
    data = code.encode("utf-8")
    for node, replacement in sorted(edits, key=lambda e: -e[0].start_byte):
        data = data[:node.start_byte] + replacement.encode("utf-8") + data[node.end_byte:]
    text = re.sub(r"[ \t]+\n", "\n", data.decode("utf-8"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def _error_line(root: Node) -> int:
    bad = next((n for n in _walk(root) if n.type == "ERROR" or n.is_missing), root)
    return bad.start_point.row + 1


def split_solution(code: str) -> tuple[str, str] | str:
    """(declarations, test code found among them), or a syntax error message."""
    root = _parse(code)
    if root.has_error:
        return f"line {_error_line(root)}: syntax error"
    statements = _statements(root)
    defined = set().union(*(_declared(s) for s in statements))
    edits: list[tuple[Node, str]] = []
    moved: list[str] = []
    for stmt in statements:
        call = _call(stmt)
        guard = _main_guard(stmt)
        if guard is not None:
            if _has_check(guard):
                moved.append(_block_body(guard))
            edits.append((stmt, ""))
        elif call is not None and _is_assert_call(call):
            moved.append(_text(stmt))
            edits.append((stmt, ""))
        elif (call is not None and (_callee(call).startswith("console.")
                                    or _callee(call) in defined)) or _is_exports(stmt) \
                or _ASSERT_MODULES.match(_required_module(stmt)):
            edits.append((stmt, ""))
        elif stmt.type == "export_statement" and _unwrap(stmt) is not stmt:
            edits.append((stmt, _text(_unwrap(stmt))))
    return _edit(code, edits), "\n".join(moved)


def _parse_salvaging_tail(tests: str) -> tuple[str, Node] | None:
    """Parse tests; if they do not parse, drop trailing lines (a reply cut off mid-test)."""
    lines = tests.splitlines()
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        root = _parse(candidate)
        if not root.has_error:
            return (candidate, root) if _has_check(root) else None
    return None


def tidy_tests(tests: str, solution_names: set[str]) -> str | RejectReason:
    """Tests ready to run after the solution, or NO_TESTS / SYNTAX_ERROR.

    Removes imports of `assert` and of the solution, copies of the solution's
    definitions and `module.exports`, and requires an assert that uses the solution.
    """
    if not tests.strip():
        return RejectReason.NO_TESTS
    salvaged = _parse_salvaging_tail(tests)
    if salvaged is None:
        return RejectReason.SYNTAX_ERROR if _parse(tests).has_error else RejectReason.NO_TESTS
    tests, root = salvaged
    edits: list[tuple[Node, str]] = []
    for stmt in _statements(root):
        module = _required_module(stmt)
        if _ASSERT_MODULES.match(module) or _RELATIVE_MODULE.match(module) \
                or _declared(stmt, functions_only=True) & solution_names or _is_exports(stmt):
            edits.append((stmt, ""))
        elif (guard := _main_guard(stmt)) is not None:
            edits.append((stmt, _block_body(guard)))
    tests = _edit(tests, edits)
    root = _parse(tests)
    used = {_text(n) for n in _walk(root) if n.type == "identifier"}
    if root.has_error:  # pragma: no cover - removing whole statements keeps it valid
        return RejectReason.SYNTAX_ERROR
    if not used & solution_names or not any(_counted(_statements(root))):
        return RejectReason.NO_TESTS
    return tests


def check_solution(solution: str, tests: str) -> tuple[str, str] | tuple[RejectReason, str]:
    """(code, tests) ready to run, or (reason, detail): the JavaScript checks of a reply."""
    return check_reply(solution, tests, split=split_solution, names_of=top_level_names,
                       tidy=tidy_tests, problems=_TEST_PROBLEMS)


def _statement(stmt: Node) -> Statement:
    """The counting rule's view of one top-level statement."""
    inner = list(_walk(stmt))
    calls = {_text(n.child_by_field_name("function")) for n in inner
             if n.type == "call_expression"
             and getattr(n.child_by_field_name("function"), "type", "") == "identifier"}
    return Statement(defines=frozenset(_declared(stmt, functions_only=True)),
                     checks=any(_is_assert_call(n) for n in inner), calls=frozenset(calls),
                     swallows=stmt.type == "try_statement"
                     and stmt.child_by_field_name("handler") is not None)


def _counted(statements: list[Node]) -> list[bool]:
    return counted([_statement(s) for s in statements])


def sandbox_tests(tests: str) -> list[list[str | bool | int]]:
    """Tests as the runner takes them: [statement source, counts as a test, line], one per
    top-level statement.

    Whether a statement counts is the runner's rule (`testcount.counted`): it contains an
    `assert` call (a loop over cases included) or calls a function the tests define that
    asserts (a `check(f)` helper); declarations, setup and a `try` whose `catch` would
    swallow a failed assert run but are not counted. Tests that do not parse go as one
    counted statement, which then fails with the SyntaxError.
    """
    root = _parse(tests)
    if root.has_error:
        return [[tests, True, 1]]
    statements = _statements(root)
    return [[_text(s), flag, s.start_point.row + 1]
            for s, flag in zip(statements, _counted(statements), strict=True)]


def _trivial(stmt: Node) -> bool:
    """A comment, `;`, a directive string, or `throw new Error(...)`."""
    if stmt.type in ("comment", "empty_statement"):
        return True
    if stmt.type == "expression_statement":
        return bool(stmt.named_children) and stmt.named_children[0].type == "string"
    if stmt.type == "throw_statement" and stmt.named_children:
        return stmt.named_children[0].type == "new_expression"
    return False


def snippet_problem(snippet: str) -> str | None:
    """Why a seed snippet is no good: 'dropped_syntax_error', 'dropped_stub', or None.

    A stub is code in which no function does anything and no class has a field. A method
    cut out of its class parses only inside one, so it is checked there.
    """
    root = _parse(snippet)
    if root.has_error:
        root = _parse(f"class Snippet {{\n{snippet}\n}}")
    if root.has_error:
        return "dropped_syntax_error"
    for node in _walk(root):
        if node.type == "field_definition":
            return None
        body = node.child_by_field_name("body") if node.type in _FUNCTIONS else None
        if body is None:
            continue
        if body.type != "statement_block" or not all(_trivial(s) for s in body.named_children):
            return None  # an expression body (`x => x + 1`) or real statements
    return "dropped_stub"
