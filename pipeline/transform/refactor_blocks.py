"""Refactorings on statements and blocks: dead `if False:` / `for` over an empty range /
`while False:` / if-else, duplicated pure assignments, no-op statements, and swapping the
branches of an if-else under a negated condition."""

from __future__ import annotations

import random

import libcst as cst

from pipeline.transform.base import Operator, Source, Variant, register
from pipeline.transform.blocks import (
    FunctionInfo,
    copyable,
    first_free_index,
    functions,
    insert,
    is_docstring,
    is_pure,
    names_in,
    parse_stmt,
)


def _clean(stmt: cst.SimpleStatementLine) -> cst.SimpleStatementLine:
    return stmt.with_changes(leading_lines=[])


def _dead_body(info: FunctionInfo, rng: random.Random) -> cst.IndentedBlock:
    """Body for dead code: a copy of a statement of the same function (its names are
    already local there, so binding them changes no scope), else `pass`."""
    pool = [s for s in info.simple if copyable(s)]
    stmt = _clean(rng.choice(pool)) if pool else parse_stmt("pass\n")
    return cst.IndentedBlock([stmt])


class _InsertDead(Operator):
    """Insert a dead compound statement at a random place in a function."""

    def dead(self, src: Source, info: FunctionInfo, body: cst.IndentedBlock,
             rng: random.Random) -> cst.BaseCompoundStatement:
        raise NotImplementedError

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        fns = [f for f in functions(src.module) if f.blocks]
        if not fns:
            return None
        info = rng.choice(fns)
        block = rng.choice(info.blocks)
        stmt = self.dead(src, info, _dead_body(info, rng), rng)
        index = rng.randint(first_free_index(block), len(block.body))
        return self.replace(src, block, insert(block, index, stmt),
                            function=info.node.name.value, index=index,
                            inserted=cst.Module([stmt]).code.strip())


@register
class DeadIf(_InsertDead):
    name = "dead_if"
    kind = "refactor"
    description = "insert an `if False:` block"

    def dead(self, src: Source, info: FunctionInfo, body: cst.IndentedBlock,
             rng: random.Random) -> cst.BaseCompoundStatement:
        return cst.If(test=cst.parse_expression(rng.choice(["False", "0", "None", "1 < 0"])),
                      body=body)


@register
class DeadFor(_InsertDead):
    name = "dead_for"
    kind = "refactor"
    description = "insert a `for` loop over an empty range"

    def dead(self, src: Source, info: FunctionInfo, body: cst.IndentedBlock,
             rng: random.Random) -> cst.BaseCompoundStatement:
        var = src.fresh_name(rng, ["_", "_i", "_k", "_unused"], ["_idx"])
        it = rng.choice(["range(0)", "[]", "()", "range(1, 1)"])
        return cst.For(target=cst.Name(var), iter=cst.parse_expression(it), body=body)


@register
class DeadWhile(_InsertDead):
    name = "dead_while"
    kind = "refactor"
    description = "insert a `while False:` loop"

    def dead(self, src: Source, info: FunctionInfo, body: cst.IndentedBlock,
             rng: random.Random) -> cst.BaseCompoundStatement:
        return cst.While(test=cst.parse_expression(rng.choice(["False", "0", "1 == 0"])),
                         body=body)


@register
class DeadIfElse(Operator):
    name = "dead_if_else"
    kind = "refactor"
    description = "wrap a statement in an always-true if whose else branch is dead"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        cands = [(info, block, i) for info in functions(src.module) for block in info.blocks
                 for i, s in enumerate(block.body)
                 if isinstance(s, cst.SimpleStatementLine) and copyable(s)]
        if not cands:
            return None
        info, block, i = rng.choice(cands)
        stmt = block.body[i]
        assert isinstance(stmt, cst.SimpleStatementLine)
        test = cst.parse_expression(rng.choice(["True", "1", "not False", "0 == 0"]))
        wrapped = cst.If(test=test, body=cst.IndentedBlock([_clean(stmt)]),
                         orelse=cst.Else(_dead_body(info, rng)),
                         leading_lines=stmt.leading_lines)
        body = list(block.body)
        body[i] = wrapped
        return self.replace(src, block, block.with_changes(body=body),
                            function=info.node.name.value, index=i)


@register
class DuplicatePure(Operator):
    name = "duplicate_pure"
    kind = "refactor"
    description = "repeat an assignment whose value is pure and does not read its target"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        cands = []
        for info in functions(src.module):
            for block in info.blocks:
                for i, s in enumerate(block.body):
                    if not (isinstance(s, cst.SimpleStatementLine) and len(s.body) == 1):
                        continue
                    a = s.body[0]
                    if not isinstance(a, cst.Assign) or not all(
                            isinstance(t.target, cst.Name) for t in a.targets):
                        continue
                    targets = {t.target.value for t in a.targets}  # type: ignore[attr-defined]
                    if is_pure(a.value) and not targets & names_in(a.value):
                        cands.append((block, i))
        if not cands:
            return None
        block, i = rng.choice(cands)
        stmt = block.body[i]
        assert isinstance(stmt, cst.SimpleStatementLine)
        return self.replace(src, block, insert(block, i + 1, _clean(stmt)), index=i,
                            duplicated=src.code_for(_clean(stmt)).strip())


@register
class InsertNoop(Operator):
    name = "insert_noop"
    kind = "refactor"
    description = "insert a no-op statement (`pass`, `...`, `None`) in a block"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        blocks = [b for info in functions(src.module) for b in info.blocks]
        if not blocks:
            return None
        block = rng.choice(blocks)
        index = rng.randint(first_free_index(block), len(block.body))
        if index == 0 and not any(is_docstring(s) for s in block.body[:1]):
            index = min(1, len(block.body))  # a bare constant first could read as docstring
        stmt = parse_stmt(rng.choice(["pass", "...", "None"]) + "\n")
        return self.replace(src, block, insert(block, index, stmt), index=index,
                            inserted=cst.Module([stmt]).code.strip())


def negate(test: cst.BaseExpression) -> cst.BaseExpression:
    """`not (test)`; `not x` becomes `x` (same truth value, and `if` only tests truth)."""
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not) \
            and not test.lpar:
        return test.expression
    atom = (cst.Name, cst.Call, cst.Attribute, cst.Subscript, cst.SimpleString,
            cst.Integer)
    inner = test if isinstance(test, atom) or test.lpar else test.with_changes(
        lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return cst.UnaryOperation(operator=cst.Not(), expression=inner)


@register
class SwapIfElse(Operator):
    name = "swap_if_else"
    kind = "refactor"
    description = "swap the branches of an if-else and negate its condition"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        import libcst.matchers as m

        ifs = [n for n in m.findall(src.module, m.If(orelse=m.Else()))
               if isinstance(n, cst.If)]
        if not ifs:
            return None
        node = rng.choice(ifs)
        assert isinstance(node.orelse, cst.Else)
        new = node.with_changes(test=negate(node.test), body=node.orelse.body,
                                whitespace_before_test=cst.SimpleWhitespace(" "),
                                orelse=node.orelse.with_changes(body=node.body))
        return self.replace(src, node, new)
