"""Refactorings on names: rename functions, parameters and locals (scope-aware), add an
unused parameter with a default, add an unused local variable."""

from __future__ import annotations

import random
from typing import Any

import libcst as cst
import libcst.matchers as m
from libcst.metadata import ClassScope, FunctionScope, GlobalScope

from pipeline.transform.base import Operator, Source, Variant, register
from pipeline.transform.blocks import first_free_index, functions, insert, parse_stmt
from pipeline.transform.scope import (
    FALLBACK,
    binding_names,
    dynamic_use,
    function_scopes,
    name_candidates,
    rename_free_in_tests,
    rename_nodes,
)

#: Literal defaults / initial values for unused parameters and locals.
LITERALS = ["None", "0", "1", "False", "True", "''", "[]", "()", "0.0", "-1", "'unused'"]


def _keyword_names(src: Source) -> set[str]:
    """Names used as call keywords in code or tests (a renamed parameter would break them);
    '**' if some call unpacks a mapping."""
    out: set[str] = set()
    for tree in (src.module, src.tests_module):
        if tree is None:
            continue
        for arg in m.findall(tree, m.Arg()):
            assert isinstance(arg, cst.Arg)
            if arg.keyword is not None:
                out.add(arg.keyword.value)
            if arg.star == "**":
                out.add("**")
    return out


def _blocked(src: Source) -> tuple[bool, set[str]]:
    info = dynamic_use(src.module)
    return info.dynamic, info.declared


def _rename_one(op: Operator, src: Source, rng: random.Random,
                cands: list[tuple[cst.FunctionDef, Any, str]]) -> Variant | None:
    """Rename one randomly chosen (function, scope, name) whose bindings are all safe."""
    rng.shuffle(cands)
    for fn, scope, old in cands:
        nodes = binding_names(scope, old)
        if nodes is None:
            continue
        new = src.fresh_name(rng, *name_candidates(old))
        code = rename_nodes(src.module, nodes, new).code
        return op.variant(src, code, {"function": fn.name.value, "old": old, "new": new})
    return None


@register
class RenameFunction(Operator):
    name = "rename_function"
    kind = "refactor"
    description = "rename a function and every call of it (tests included)"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        dynamic, declared = _blocked(src)
        if dynamic:
            return None
        defs = [(node, src.scopes.get(node)) for node, _ in function_scopes(src)]
        defs = [(d, s) for d, s in defs if isinstance(s, (GlobalScope, FunctionScope))
                and not d.name.value.startswith("__") and d.name.value not in declared]
        rng.shuffle(defs)
        for node, scope in defs:
            old = node.name.value
            nodes = binding_names(scope, old)
            if nodes is None:
                continue
            new = src.fresh_name(rng, *name_candidates(old))
            tests = rename_free_in_tests(src, old, new) if isinstance(scope, GlobalScope) \
                else src.tests
            if tests is None:
                continue
            code = rename_nodes(src.module, nodes, new).code
            return self.variant(src, code, {"old": old, "new": new}, tests=tests)
        return None


@register
class RenameParameter(Operator):
    name = "rename_parameter"
    kind = "refactor"
    description = "rename a function parameter inside its function"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        dynamic, declared = _blocked(src)
        if dynamic:
            return None
        keywords = _keyword_names(src)
        if "**" in keywords:
            return None
        cands = []
        for fn, scope in function_scopes(src):
            for p in (*fn.params.posonly_params, *fn.params.params, *fn.params.kwonly_params):
                old = p.name.value
                if old not in ("self", "cls") and old not in keywords and old not in declared:
                    cands.append((fn, scope, old))
        return _rename_one(self, src, rng, cands)


@register
class RenameLocal(Operator):
    name = "rename_local"
    kind = "refactor"
    description = "rename a local variable everywhere it is visible"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        dynamic, declared = _blocked(src)
        if dynamic:
            return None
        cands = []
        for fn, scope in function_scopes(src):
            for name in sorted({a.name for a in scope.assignments}):
                if name in declared:
                    continue
                if all(isinstance(getattr(a, "node", None), cst.Name)
                       for a in scope.assignments[name]):
                    cands.append((fn, scope, name))
        return _rename_one(self, src, rng, cands)


@register
class AddUnusedParameter(Operator):
    name = "add_unused_parameter"
    kind = "refactor"
    description = "add a parameter with a default value that the function never reads"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        fns = [fn for fn, scope in function_scopes(src)
               if not isinstance(src.scopes.get(fn), ClassScope) or fn.params.params]
        if not fns:
            return None
        fn = rng.choice(fns)
        new = src.fresh_name(rng, ["extra", "option", "flag", "unused", "opt", "config",
                                   "verbose", "debug", "strict", "context"])
        default = rng.choice(LITERALS)
        param = cst.Param(cst.Name(new), default=cst.parse_expression(default),
                          equal=cst.AssignEqual(cst.SimpleWhitespace(""),
                                                cst.SimpleWhitespace("")))
        ps = fn.params
        if isinstance(ps.star_arg, cst.MaybeSentinel) and not ps.kwonly_params:
            params = list(ps.params)
            if params and params[-1].comma is not cst.MaybeSentinel.DEFAULT:
                params[-1] = params[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
            new_ps = ps.with_changes(params=[*params, param])
        else:
            new_ps = ps.with_changes(kwonly_params=[*ps.kwonly_params, param])
        return self.replace(src, ps, new_ps, function=fn.name.value, param=new,
                            default=default)


@register
class AddUnusedLocal(Operator):
    name = "add_unused_local"
    kind = "refactor"
    description = "assign a local variable that is never read"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        fns = [f for f in functions(src.module) if isinstance(f.node.body, cst.IndentedBlock)]
        if not fns:
            return None
        info = rng.choice(fns)
        block = rng.choice(info.blocks)
        new = src.fresh_name(rng, [f"{w}_unused" for w in FALLBACK] + ["tmp", "unused",
                                                                        "placeholder", "_x"])
        stmt = parse_stmt(f"{new} = {rng.choice(LITERALS)}\n")
        index = rng.randint(first_free_index(block), len(block.body))
        new_block = insert(block, index, stmt)
        return self.replace(src, block, new_block, function=info.node.name.value,
                            inserted=src.module.code_for_node(stmt).strip(), index=index)
