"""Loop refactorings: for-to-while and while-to-for, only where provably equal.

for-to-while: `for i in range(a, b[, step]): body` becomes `i = a; while i < b: body;
i += step` when the body has no `continue` of its own, does not rebind `i`, cannot change
the bounds (see pipeline.transform.loop_facts), and `i` is read nowhere else (its final
value differs) nor captured by a closure; any other `for` without `else` becomes the
iterator protocol spelled out (`next()` in a `while True`).
while-to-for: the reverse. `i = a` (a is surely an int; with other statements in between
that do not mention `i`, an int literal), then `while i < b` (`<=`, or `b > i`), a body
ending in `i += 1` (or `i = i + 1`) with no `continue` of its own and no other binding of
`i`, `i` used nowhere else and captured by no closure, and `b` an int made of literals,
names and `len(name)` under `+ - * // %` that the body cannot change: `range(a, b)`
evaluates `b` once, the `while` test on every pass. `break` needs no care: neither form
touches `i` on the way out.
"""

from __future__ import annotations

import random

import libcst as cst
import libcst.matchers as m

from pipeline.transform.base import Operator, Source, Variant, register
from pipeline.transform.blocks import (
    FunctionInfo,
    functions,
    names_in,
    own_continue,
    parse_stmt,
    plus,
    stored,
)
from pipeline.transform.loop_facts import FunctionFacts

_STEP = m.Integer() | m.UnaryOperation(operator=m.Minus(), expression=m.Integer())


def _as_block(body: cst.BaseSuite) -> cst.IndentedBlock:
    if isinstance(body, cst.IndentedBlock):
        return body
    assert isinstance(body, cst.SimpleStatementSuite)
    return cst.IndentedBlock([cst.SimpleStatementLine(list(body.body))])


def _splice(block: cst.IndentedBlock, i: int, n: int, new: list[cst.BaseStatement]
            ) -> cst.IndentedBlock:
    body = list(block.body)
    body[i:i + n] = new
    return block.with_changes(body=body)


@register
class ForToWhile(Operator):
    name = "for_to_while"
    kind = "refactor"
    description = "rewrite a `for` loop as an equivalent `while` loop"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        cands = [(info, block, i) for info in functions(src.module) for block in info.blocks
                 for i, s in enumerate(block.body)
                 if isinstance(s, cst.For) and s.orelse is None and s.asynchronous is None]
        if not cands:
            return None
        # Prefer the counting form, the natural rewrite, where some loop allows it.
        facts: dict[int, FunctionFacts] = {}
        counted = []
        for info, block, i in cands:
            loop = block.body[i]
            assert isinstance(loop, cst.For)
            f = facts.setdefault(id(info), FunctionFacts(src, info.node))
            new = self._counter(f, loop, _as_block(loop.body))
            if new is not None:
                counted.append(((info, block, i), new))
        if counted:
            (info, block, i), new = rng.choice(counted)
            form = "counter"
        else:
            info, block, i = rng.choice(cands)
            loop = block.body[i]
            assert isinstance(loop, cst.For)
            new, form = self._iterator(src, rng, loop, _as_block(loop.body)), "iterator"
        return self.replace(src, block, _splice(block, i, 1, new), form=form)

    def _counter(self, facts: FunctionFacts, loop: cst.For, body: cst.IndentedBlock
                 ) -> list[cst.BaseStatement] | None:
        call = loop.iter
        if not (isinstance(loop.target, cst.Name) and m.matches(call, m.Call(func=m.Name(
                "range"))) and isinstance(call, cst.Call) and 1 <= len(call.args) <= 3
                and all(a.keyword is None and not a.star for a in call.args)):
            return None
        var = loop.target.value
        args = [a.value for a in call.args]
        start, stop = (cst.Integer("0"), args[0]) if len(args) == 1 else (args[0], args[1])
        step = args[2] if len(args) == 3 else cst.Integer("1")
        if not m.matches(step, _STEP):
            return None
        negative = isinstance(step, cst.UnaryOperation)
        if (negative and step.expression.value == "0") or getattr(step, "value", "") == "0":
            return None
        if own_continue(body) or var in stored(body) or not facts.builtin("range") \
                or not all(facts.stable_bound(a, body, need_int=False) for a in args) \
                or not facts.confined(var, loop):
            return None
        cmp = ">" if negative else "<"
        inc = f"{var} -= {step.expression.value}" if negative else \
            f"{var} += {cst.Module([]).code_for_node(step)}"
        code = cst.Module([]).code_for_node
        init = parse_stmt(f"{var} = {code(start)}\n").with_changes(
            leading_lines=loop.leading_lines)
        test = cst.parse_expression(f"{var} {cmp} {code(stop)}")
        new_body = body.with_changes(body=[*body.body, parse_stmt(inc + "\n")])
        return [init, cst.While(test=test, body=new_body)]

    def _iterator(self, src: Source, rng: random.Random, loop: cst.For,
                  body: cst.IndentedBlock) -> list[cst.BaseStatement]:
        it = src.fresh_name(rng, ["_it", "_iterator", "_items_iter"], ["_iter"])
        code = cst.Module([]).code_for_node
        init = parse_stmt(f"{it} = iter({code(loop.iter)})\n").with_changes(
            leading_lines=loop.leading_lines)
        fetch = parse_stmt(f"try:\n    {code(loop.target)} = next({it})\n"
                           "except StopIteration:\n    break\n")
        return [init, cst.While(test=cst.Name("True"),
                                body=body.with_changes(body=[fetch, *body.body]))]


#: `i += 1` or `i = i + 1`, the counter's step (the name is checked by the caller).
_INCREMENT = m.SimpleStatementLine(body=[
    m.AugAssign(target=m.Name(), operator=m.AddAssign(), value=m.Integer("1"))
    | m.Assign(targets=[m.AssignTarget(target=m.Name())], value=m.BinaryOperation(
        left=m.Name(), operator=m.Add(), right=m.Integer("1")))])
_INIT = m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name())])])


def _counted_test(test: cst.BaseExpression) -> tuple[str, cst.BaseExpression, bool] | None:
    """(counter, bound, inclusive) of `i < b`, `i <= b`, `b > i` or `b >= i`."""
    if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1):
        return None
    op, right = test.comparisons[0].operator, test.comparisons[0].comparator
    if isinstance(test.left, cst.Name) and isinstance(op, (cst.LessThan, cst.LessThanEqual)):
        return test.left.value, right, isinstance(op, cst.LessThanEqual)
    if isinstance(right, cst.Name) and isinstance(op, (cst.GreaterThan, cst.GreaterThanEqual)):
        return right.value, test.left, isinstance(op, cst.GreaterThanEqual)
    return None


def _increments(stmt: cst.BaseStatement, var: str) -> bool:
    if not m.matches(stmt, _INCREMENT):
        return False
    s = stmt.body[0]  # type: ignore[attr-defined]
    names = [s.target] if isinstance(s, cst.AugAssign) else [s.targets[0].target, s.value.left]
    return all(n.value == var for n in names)


@register
class WhileToFor(Operator):
    name = "while_to_for"
    kind = "refactor"
    description = "rewrite a counting `while` loop as a `for` loop over a range"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        cands = []
        for info in functions(src.module):
            facts = FunctionFacts(src, info.node)
            for block in info.blocks:
                for i, loop in enumerate(block.body):
                    pat = self._match(facts, info, block, i) \
                        if isinstance(loop, cst.While) else None
                    if pat is not None:
                        cands.append((block, i, pat))
        if not cands:
            return None
        block, i, (j, var, start, stop, body) = rng.choice(cands)
        code = cst.Module([]).code_for_node
        bounds = code(stop) if code(start) == "0" else f"{code(start)}, {code(stop)}"
        init, old = block.body[j], block.body[i]
        new = list(block.body)
        # The comments and blank lines above the `i = a` line stay where they were.
        after_init = new[j + 1] if j + 1 < i else old
        lines = [*init.leading_lines, *after_init.leading_lines]
        loop = cst.For(target=cst.Name(var), iter=cst.parse_expression(f"range({bounds})"),
                       body=body, leading_lines=lines if j + 1 == i else old.leading_lines)
        new[i] = loop
        if j + 1 < i:
            new[j + 1] = after_init.with_changes(leading_lines=lines)
        del new[j]
        return self.replace(src, block, block.with_changes(body=new), var=var)

    def _match(self, facts: FunctionFacts, info: FunctionInfo, block: cst.IndentedBlock,
               i: int) -> tuple[int, str, cst.BaseExpression, cst.BaseExpression,
                                cst.IndentedBlock] | None:
        loop = block.body[i]
        if not (isinstance(loop, cst.While) and loop.orelse is None
                and isinstance(loop.body, cst.IndentedBlock) and loop.body.body):
            return None
        test = _counted_test(loop.test)
        if test is None or not _increments(loop.body.body[-1], test[0]):
            return None
        var, stop, inclusive = test
        j = i - 1  # the `var = start` line: the nearest statement above that names var
        while j >= 0 and var not in names_in(block.body[j]):
            j -= 1
        init = block.body[j] if j >= 0 else None
        if init is None or not m.matches(init, _INIT) \
                or init.body[0].targets[0].target.value != var:  # type: ignore[attr-defined]
            return None
        start = init.body[0].value  # type: ignore[attr-defined]
        rest = loop.body.with_changes(body=list(loop.body.body[:-1]) or [parse_stmt("pass\n")])
        if (j + 1 < i and not m.matches(start, _STEP)) or not facts.builtin("range") \
                or var in names_in(start) \
                or var in names_in(stop) or not facts.int_valued(start) \
                or not facts.stable_bound(stop, rest, need_int=True) or own_continue(rest) \
                or var in stored(rest) or not facts.confined(var, init, loop):
            return None
        if inclusive:  # i <= n - 1: range(n); i <= n: range(n + 1)
            minus_one = isinstance(stop, cst.BinaryOperation) and m.matches(
                stop, m.BinaryOperation(operator=m.Subtract(), right=m.Integer("1")))
            stop = stop.left if isinstance(stop, cst.BinaryOperation) and minus_one \
                else plus(stop, 1)
        return j, var, start, stop, rest
