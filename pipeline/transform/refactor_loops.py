"""Loop refactorings: for-to-while and while-to-for, only where provably equal.

for-to-while: `for i in range(a, b[, step]): body` becomes `i = a; while i < b: body;
i += step` when the body has no `continue`, assigns neither `i` nor the names of the
bounds, and `i` is not read after the loop (its final value differs); any other `for`
without `else` becomes the iterator protocol spelled out (`next()` in a `while True`).
while-to-for: the reverse pattern, with an int literal or `len(name)` bound.
"""

from __future__ import annotations

import random

import libcst as cst
import libcst.matchers as m

from pipeline.transform.base import Operator, Source, Variant, register
from pipeline.transform.blocks import functions, names_in, parse_stmt

_STORE = (m.AssignTarget() | m.AugAssign() | m.AnnAssign() | m.For() | m.NamedExpr()
          | m.WithItem() | m.CompFor() | m.Del())
_STEP = m.Integer() | m.UnaryOperation(operator=m.Minus(), expression=m.Integer())


def _stored(node: cst.CSTNode) -> set[str]:
    """Names bound (or deleted) anywhere inside `node`."""
    out: set[str] = set()
    for n in m.findall(node, _STORE):
        target = getattr(n, "target", None) or getattr(n, "asname", None)
        if target is not None:
            out |= names_in(target)
    return out


def _mutable_uses(body: cst.CSTNode, names: set[str]) -> bool:
    """Whether the body might change a value held by `names` (method call on it, or
    passed to a call)."""
    for n in m.findall(body, m.Attribute(value=m.Name()) | m.Arg(value=m.Name())):
        val = n.value  # type: ignore[attr-defined]
        if isinstance(val, cst.Name) and val.value in names:
            return True
    return False


def _stable_bound(expr: cst.BaseExpression, body: cst.CSTNode) -> bool:
    """An int literal, a name, or `len(name)` that the loop body cannot change."""
    if m.matches(expr, _STEP):
        return True
    if m.matches(expr, m.Name() | m.Call(func=m.Name("len"), args=[m.Arg(value=m.Name())])):
        names = names_in(expr) - {"len"}
        return not (names & _stored(body)) and not _mutable_uses(body, names)
    return False


def _as_block(body: cst.BaseSuite) -> cst.IndentedBlock:
    if isinstance(body, cst.IndentedBlock):
        return body
    assert isinstance(body, cst.SimpleStatementSuite)
    return cst.IndentedBlock([cst.SimpleStatementLine(list(body.body))])


def _uses_outside(fn: cst.FunctionDef, inside: list[cst.CSTNode], name: str) -> bool:
    total = sum(1 for n in m.findall(fn, m.Name(name)))
    within = sum(1 for node in inside for n in m.findall(node, m.Name(name)))
    return total != within


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
        counted = [(c, self._counter(c[0].node, c[1].body[c[2]], _as_block(
            c[1].body[c[2]].body))) for c in cands]  # type: ignore[attr-defined]
        counted = [(c, new) for c, new in counted if new is not None]
        if counted:
            (info, block, i), new = rng.choice(counted)
            form = "counter"
        else:
            info, block, i = rng.choice(cands)
            loop = block.body[i]
            assert isinstance(loop, cst.For)
            new, form = self._iterator(src, rng, loop, _as_block(loop.body)), "iterator"
        return self.replace(src, block, _splice(block, i, 1, new), form=form)

    def _counter(self, fn: cst.FunctionDef, loop: cst.For, body: cst.IndentedBlock
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
        if m.findall(body, m.Continue()) or var in _stored(body) \
                or not all(_stable_bound(a, body) for a in args) \
                or _uses_outside(fn, [loop], var):
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


@register
class WhileToFor(Operator):
    name = "while_to_for"
    kind = "refactor"
    description = "rewrite a counting `while` loop as a `for` loop over a range"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        cands = []
        for info in functions(src.module):
            for block in info.blocks:
                for i in range(len(block.body) - 1):
                    pat = self._match(info.node, block.body[i], block.body[i + 1])
                    if pat is not None:
                        cands.append((block, i, pat))
        if not cands:
            return None
        block, i, (var, start, stop, body) = rng.choice(cands)
        code = cst.Module([]).code_for_node
        bounds = code(stop) if code(start) == "0" else f"{code(start)}, {code(stop)}"
        loop = cst.For(target=cst.Name(var), iter=cst.parse_expression(f"range({bounds})"),
                       body=body, leading_lines=block.body[i].leading_lines)
        return self.replace(src, block, _splice(block, i, 2, [loop]), var=var)

    def _match(self, fn: cst.FunctionDef, init: cst.BaseStatement, loop: cst.BaseStatement
               ) -> tuple[str, cst.BaseExpression, cst.BaseExpression, cst.IndentedBlock
                          ] | None:
        if not (m.matches(init, m.SimpleStatementLine(body=[m.Assign(
                targets=[m.AssignTarget(target=m.Name())])])) and isinstance(loop, cst.While)
                and loop.orelse is None and isinstance(loop.body, cst.IndentedBlock)):
            return None
        assign = init.body[0]  # type: ignore[attr-defined]
        var = assign.targets[0].target.value
        start = assign.value
        test = loop.test
        if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1
                and m.matches(test.left, m.Name(var))
                and isinstance(test.comparisons[0].operator, (cst.LessThan, cst.LessThanEqual))):
            return None
        stop = test.comparisons[0].comparator
        if isinstance(test.comparisons[0].operator, cst.LessThanEqual):
            if not m.matches(stop, m.Integer()):
                return None
            stop = cst.Integer(str(int(stop.value) + 1))  # type: ignore[attr-defined]
        body = loop.body.body
        last = body[-1] if body else None
        if not m.matches(last, m.SimpleStatementLine(body=[m.AugAssign(
                target=m.Name(var), operator=m.AddAssign(), value=m.Integer("1"))])):
            return None
        rest = loop.body.with_changes(body=list(body[:-1]) or [parse_stmt("pass\n")])
        if not (m.matches(start, m.Integer()) or _stable_bound(start, rest)) \
                or not m.matches(stop, m.Integer() | m.Call(func=m.Name("len"))) \
                or not _stable_bound(stop, rest) or m.findall(rest, m.Continue()) \
                or var in _stored(rest) or _uses_outside(fn, [init, loop], var):
            return None
        return var, start, stop, rest
