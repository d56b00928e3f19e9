"""Bug operators: realistic mutations that at least one test should catch.

A bug variant is kept only if its tests now fail in the sandbox (SWE-smith's rule; see
pipeline.transform.verify); the rest are written as rejected, `bug_not_caught`.
"""

from __future__ import annotations

import random

import libcst as cst
import libcst.matchers as m
from libcst.metadata import FunctionScope

from pipeline.transform.base import Operator, Source, Variant, register
from pipeline.transform.blocks import functions, is_docstring, parse_stmt, plus
from pipeline.transform.refactor_blocks import negate
from pipeline.transform.scope import function_scopes


class _Pick(Operator):
    """Collect candidate nodes, pick one with the rng, replace it."""

    #: What the operator may touch (searched in every function body).
    match: m.BaseMatcherNode

    def mutate(self, node: cst.CSTNode, src: Source, rng: random.Random) -> cst.CSTNode | None:
        raise NotImplementedError

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        cands = [n for info in functions(src.module)
                 for n in m.findall(info.node.body, self.match)]
        rng.shuffle(cands)
        for node in cands[:8]:
            new = self.mutate(node, src, rng)
            if new is not None:
                return self.replace(src, node, new)
        return None


@register
class OffByOne(_Pick):
    name = "off_by_one"
    kind = "bug"
    description = "off-by-one in a range bound, an index or a slice bound"
    match = (m.Call(func=m.Name("range")) | m.Subscript())

    def mutate(self, node: cst.CSTNode, src: Source, rng: random.Random) -> cst.CSTNode | None:
        delta = rng.choice([1, -1])
        if isinstance(node, cst.Call):
            args = list(node.args)
            if not args or any(a.keyword or a.star for a in args):
                return None
            k = min(len(args) - 1, 1) if len(args) > 1 and rng.random() < 0.7 else 0
            args[k] = args[k].with_changes(value=plus(args[k].value, delta))
            return node.with_changes(args=args)
        assert isinstance(node, cst.Subscript)
        if len(node.slice) != 1:
            return None
        el = node.slice[0]
        sl = el.slice
        if isinstance(sl, cst.Index):
            if isinstance(sl.value, (cst.SimpleString, cst.FormattedString, cst.Name)) and \
                    not m.matches(sl.value, m.Name()):
                return None
            if isinstance(sl.value, cst.Name) and sl.value.value in ("str", "int", "float"):
                return None
            new_sl: cst.BaseSlice = sl.with_changes(value=plus(sl.value, delta))
        elif isinstance(sl, cst.Slice):
            bounds = [b for b in ("lower", "upper") if getattr(sl, b) is not None]
            if not bounds:
                return None
            b = rng.choice(bounds)
            new_sl = sl.with_changes(**{b: plus(getattr(sl, b), delta)})
        else:
            return None
        return node.with_changes(slice=[el.with_changes(slice=new_sl)])


_FLIPS = {cst.LessThan: cst.LessThanEqual, cst.LessThanEqual: cst.LessThan,
          cst.GreaterThan: cst.GreaterThanEqual, cst.GreaterThanEqual: cst.GreaterThan,
          cst.Equal: cst.NotEqual, cst.NotEqual: cst.Equal, cst.In: cst.NotIn,
          cst.NotIn: cst.In, cst.Is: cst.IsNot, cst.IsNot: cst.Is}


@register
class FlipComparison(_Pick):
    name = "flip_comparison"
    kind = "bug"
    description = "change a comparison operator (`<` vs `<=`, `==` vs `!=`, `in` vs `not in`)"
    match = m.Comparison()

    def mutate(self, node: cst.CSTNode, src: Source, rng: random.Random) -> cst.CSTNode | None:
        assert isinstance(node, cst.Comparison)
        k = rng.randrange(len(node.comparisons))
        comp = node.comparisons[k]
        flipped = _FLIPS[type(comp.operator)]()
        comps = list(node.comparisons)
        comps[k] = comp.with_changes(operator=flipped)
        return node.with_changes(comparisons=comps)


@register
class FlipBoolean(_Pick):
    name = "flip_boolean"
    kind = "bug"
    description = "swap `and` and `or`"
    match = m.BooleanOperation()

    def mutate(self, node: cst.CSTNode, src: Source, rng: random.Random) -> cst.CSTNode | None:
        assert isinstance(node, cst.BooleanOperation)
        op = cst.Or() if isinstance(node.operator, cst.And) else cst.And()
        return node.with_changes(operator=op)


@register
class InvertCondition(_Pick):
    name = "invert_condition"
    kind = "bug"
    description = "negate the condition of an `if` or a conditional expression"
    match = m.If() | m.IfExp()

    def mutate(self, node: cst.CSTNode, src: Source, rng: random.Random) -> cst.CSTNode | None:
        ws = {"whitespace_before_test": cst.SimpleWhitespace(" ")} if isinstance(node, cst.If) \
            else {"whitespace_after_if": cst.SimpleWhitespace(" ")}
        return node.with_changes(test=negate(node.test), **ws)  # type: ignore[attr-defined]


@register
class SwapArguments(_Pick):
    name = "swap_arguments"
    kind = "bug"
    description = "swap two positional arguments of a call"
    match = m.Call()

    def mutate(self, node: cst.CSTNode, src: Source, rng: random.Random) -> cst.CSTNode | None:
        assert isinstance(node, cst.Call)
        pos = [i for i, a in enumerate(node.args) if a.keyword is None and not a.star]
        if len(pos) < 2:
            return None
        i, j = sorted(rng.sample(pos, 2))
        a, b = node.args[i], node.args[j]
        if src.code_for(a.value) == src.code_for(b.value):
            return None
        args = list(node.args)
        args[i], args[j] = a.with_changes(value=b.value), b.with_changes(value=a.value)
        return node.with_changes(args=args)


@register
class MissingReturn(_Pick):
    name = "missing_return"
    kind = "bug"
    description = "compute the return value but forget the `return`"
    match = m.SimpleStatementLine(body=[m.Return()])

    def mutate(self, node: cst.CSTNode, src: Source, rng: random.Random) -> cst.CSTNode | None:
        ret = node.body[0]  # type: ignore[attr-defined]
        if ret.value is None or m.matches(ret.value, m.Name("None")):
            return None
        return node.with_changes(body=[cst.Expr(ret.value)])


@register
class WrongVariable(Operator):
    name = "wrong_variable"
    kind = "bug"
    description = "read a different local variable than intended"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        cands = []
        for fn, scope in function_scopes(src):
            names = sorted({a.name for a in scope.assignments
                            if isinstance(getattr(a, "node", None), (cst.Name, cst.Param))})
            if len(names) < 2:
                continue
            refs = {id(ref.node): a.name for a in scope.assignments for ref in a.references
                    if isinstance(ref.node, cst.Name)
                    and isinstance(src.scopes.get(ref.node), FunctionScope)}
            # Source order: scope sets iterate in no fixed order, the rng pick must.
            for node in m.findall(fn.body, m.Name()):
                if id(node) in refs:
                    cands.append((node, [n for n in names if n != refs[id(node)]]))
        if not cands:
            return None
        node, others = rng.choice(cands)
        return self.replace(src, node, node.with_changes(value=rng.choice(others)))


def _block_stmts(src: Source) -> list[tuple[cst.IndentedBlock, int]]:
    out = []
    for info in functions(src.module):
        for block in info.blocks:
            real = [i for i, s in enumerate(block.body) if not is_docstring(s)]
            if len(real) >= 2:
                out += [(block, i) for i in real]
    return out


@register
class RemoveStatement(Operator):
    name = "remove_statement"
    kind = "bug"
    description = "leave out one statement"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        cands = [(b, i) for b, i in _block_stmts(src)
                 if isinstance(b.body[i], cst.SimpleStatementLine)
                 and not m.matches(b.body[i], m.SimpleStatementLine(body=[m.Pass()]))]
        if not cands:
            return None
        block, i = rng.choice(cands)
        body = list(block.body)
        removed = body.pop(i)
        return self.replace(src, block, block.with_changes(body=body),
                            removed=src.code_for(removed).strip())


@register
class DropBaseCase(Operator):
    name = "drop_base_case"
    kind = "bug"
    description = "drop a base case or early-return guard (`if ...: return ...`)"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        cands = []
        for info in functions(src.module):
            fname = info.node.name.value
            recursive = bool(m.findall(info.node.body, m.Call(func=m.Name(fname))))
            body = info.node.body
            if not isinstance(body, cst.IndentedBlock):
                continue
            for i, s in enumerate(body.body):
                if isinstance(s, cst.If) and s.orelse is None and m.findall(s.body, m.Return()) \
                        and len(body.body) - i > 1:
                    cands.append((recursive, body, i))
        if not cands:
            return None
        if any(r for r, _, _ in cands):
            cands = [c for c in cands if c[0]]
        _, block, i = rng.choice(cands)
        stmts = list(block.body)
        removed = stmts.pop(i)
        if not any(not is_docstring(s) for s in stmts):
            stmts.append(parse_stmt("pass\n"))
        return self.replace(src, block, block.with_changes(body=stmts),
                            removed=src.code_for(removed).strip())
