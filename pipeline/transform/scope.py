"""Scope-aware renaming on libcst's ScopeProvider.

A rename touches exactly the Name nodes bound to one binding: its assignments (targets,
parameters, def names) and every access that resolves to them, including accesses from
nested functions. It refuses where scope analysis cannot be trusted (`locals()`, `eval`,
`global`/`nonlocal` of the name, `f"{x=}"`, names bound by imports or used in string
annotations). New names come from `Source.fresh_name`: they appear nowhere in code or
tests and are no builtin or keyword, so nothing is captured or clobbered.
"""

from __future__ import annotations

import libcst as cst
from libcst.metadata import FunctionScope, GlobalScope, MetadataWrapper, ScopeProvider

from pipeline.transform.base import Source

#: Calls that read or write a frame's variables by name: renames cannot see through them.
DYNAMIC_CALLS = frozenset({"locals", "vars", "eval", "exec", "globals", "dir", "__import__"})

#: Identifier parts and plausible replacements (refactoring renames, synonym edits).
SYNONYMS: dict[str, list[str]] = {
    "count": ["total", "tally", "num", "counter"], "result": ["res", "output", "answer", "out"],
    "res": ["result", "acc", "ret"], "ans": ["answer", "result", "res"],
    "i": ["idx", "k", "pos", "index"], "j": ["jdx", "m", "inner"], "k": ["key_", "kk", "w"],
    "n": ["num", "size", "length", "count_"], "s": ["text", "string", "word", "chars"],
    "lst": ["items", "values", "seq", "elements"], "l": ["items", "seq", "arr"],
    "arr": ["array", "items", "data", "nums"], "nums": ["numbers", "values", "arr"],
    "x": ["val", "value", "item", "elem"], "y": ["other", "second", "val2"],
    "num": ["number", "value", "n_", "integer"], "number": ["num", "value", "amount"],
    "string": ["text", "s_", "word", "str_"], "text": ["string", "content", "txt"],
    "word": ["token", "term", "w_"], "words": ["tokens", "terms", "parts"],
    "total": ["sum_", "acc", "running", "count_"], "max": ["largest", "highest", "top"],
    "min": ["smallest", "lowest", "least"], "list": ["items", "seq", "array"],
    "value": ["val", "item", "element"], "index": ["idx", "pos", "position"],
    "key": ["k_", "name", "label"], "values": ["items", "vals", "elements"],
    "numbers": ["nums", "values", "items"], "char": ["ch", "letter", "c_"],
    "c": ["ch", "char", "letter"], "d": ["mapping", "table", "lookup"],
    "dict": ["mapping", "table", "lookup"], "a": ["first", "left", "p"],
    "b": ["second", "right", "q"], "get": ["fetch", "find", "lookup"],
    "is": ["check", "has", "test"], "find": ["search", "locate", "get"],
    "sum": ["total", "add_up", "accumulate"], "sort": ["order", "arrange"],
    "check": ["verify", "validate", "is_ok"], "compute": ["calculate", "calc", "evaluate"],
    "make": ["build", "create"], "remove": ["delete", "drop", "strip"],
}

#: Fallback vocabulary when an identifier has no synonym.
FALLBACK = ["item", "value", "data", "temp", "acc", "elem", "node", "entry", "part", "step"]


def name_candidates(old: str) -> tuple[list[str], list[str]]:
    """Plausible new names for identifier `old`: (synonyms of the whole name or of one
    snake_case part, fallback prefixed and suffixed forms)."""
    syns: list[str] = list(SYNONYMS.get(old.lower(), []))
    parts = old.split("_")
    for i, part in enumerate(parts):
        for syn in SYNONYMS.get(part.lower(), []):
            syns.append("_".join(parts[:i] + [syn.strip("_")] + parts[i + 1:]))
    base = old.strip("_") or "value"
    fallback = [f"{base}_val", f"{base}2", f"new_{base}", f"{base}_"]
    fallback += [f"{base}_{w}" for w in FALLBACK]
    return [s for s in syns if s != old], fallback


class _DynamicUse(cst.CSTVisitor):
    """Finds what defeats static renaming: dynamic frame access, f-string `=`, and the
    names of global/nonlocal declarations."""

    def __init__(self) -> None:
        self.dynamic = False
        self.declared: set[str] = set()

    def visit_Call(self, node: cst.Call) -> None:
        if isinstance(node.func, cst.Name) and node.func.value in DYNAMIC_CALLS:
            self.dynamic = True

    def visit_FormattedStringExpression(self, node: cst.FormattedStringExpression) -> None:
        if node.equal is not None:
            self.dynamic = True

    def visit_Global(self, node: cst.Global) -> None:
        self.declared.update(n.name.value for n in node.names)

    def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
        self.declared.update(n.name.value for n in node.names)


def dynamic_use(node: cst.CSTNode) -> _DynamicUse:
    """What in `node` defeats static renaming (see `_DynamicUse`)."""
    v = _DynamicUse()
    node.visit(v)
    return v


def function_scopes(src: Source) -> list[tuple[cst.FunctionDef, FunctionScope]]:
    """Every function of the code with the scope of its body, in source order."""
    out = []
    for node, _scope in src.scopes.items():
        if isinstance(node, cst.FunctionDef) and node.body.body:
            inner = src.scopes.get(node.body.body[0])
            if isinstance(inner, FunctionScope):
                out.append((node, inner))
    return out


def binding_names(scope: FunctionScope | GlobalScope, name: str) -> list[cst.Name] | None:
    """The Name nodes to rename for `name` bound in `scope`, or None if some binding or
    access is not a plain name (imports, string annotations, class attributes...)."""
    nodes: list[cst.Name] = []
    assignments = list(scope.assignments[name])
    if not assignments:
        return None
    for a in assignments:
        target = getattr(a, "node", None)
        if isinstance(target, cst.Name):
            nodes.append(target)
        elif isinstance(target, (cst.Param, cst.FunctionDef, cst.ClassDef)):
            nodes.append(target.name)
        else:
            return None
        for ref in a.references:
            if not isinstance(ref.node, cst.Name):
                return None
            nodes.append(ref.node)
    return nodes


class _RenameByIdentity(cst.CSTTransformer):
    def __init__(self, targets: set[int], new: str) -> None:
        self.targets = targets
        self.new = new

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.Name:
        if id(original_node) in self.targets:
            return updated_node.with_changes(value=self.new)
        return updated_node


def rename_nodes(module: cst.Module, nodes: list[cst.Name], new: str) -> cst.Module:
    """`module` with exactly the given Name nodes (by identity) renamed to `new`."""
    out = module.visit(_RenameByIdentity({id(n) for n in nodes}, new))
    assert isinstance(out, cst.Module)
    return out


def rename_free_in_tests(src: Source, old: str, new: str) -> str | None:
    """The tests with every reference to the code's global `old` renamed; None if the
    tests bind `old` themselves (then whose name is it?) or do not parse."""
    tree = src.tests_module
    if tree is None:
        return None
    if old not in src.tests:
        return src.tests
    wrapper = MetadataWrapper(tree, unsafe_skip_copy=True)
    scopes = wrapper.resolve(ScopeProvider)
    refs: list[cst.Name] = []
    seen: set[int] = set()
    for scope in scopes.values():
        if scope is None or id(scope) in seen:
            continue
        seen.add(id(scope))
        if scope.assignments[old]:
            return None
        for acc in scope.accesses[old]:
            if not acc.referents and isinstance(acc.node, cst.Name):
                refs.append(acc.node)
    if dynamic_use(tree).dynamic:
        return None
    return rename_nodes(tree, refs, new).code
