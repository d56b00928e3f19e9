"""Refactorings on expressions: swap operands of commutative operators, expand augmented
assignments, add arithmetic identities, and return through a temporary variable."""

from __future__ import annotations

import random

import libcst as cst
import libcst.matchers as m

from pipeline.transform.base import Operator, Source, Variant, register
from pipeline.transform.blocks import functions, is_pure, parse_stmt

#: Operators whose operands commute for every built-in type that supports them (`+`
#: concatenates sequences, `|` merges dicts with a preference, so neither is here).
_COMMUTATIVE_BIN = (cst.Multiply, cst.BitAnd, cst.BitXor)
_NUMBER = m.Integer() | m.Float() | m.UnaryOperation(operator=m.Minus(),
                                                      expression=m.Integer() | m.Float())


def _swappable(node: cst.CSTNode) -> bool:
    if isinstance(node, cst.BinaryOperation):
        if not (is_pure(node.left) and is_pure(node.right)):
            return False
        if isinstance(node.operator, _COMMUTATIVE_BIN):
            return True
        # `+` commutes for numbers; a number literal on one side means the other side is
        # a number too (or both orders raise TypeError).
        return isinstance(node.operator, cst.Add) and (
            m.matches(node.left, _NUMBER) or m.matches(node.right, _NUMBER))
    if isinstance(node, cst.Comparison) and len(node.comparisons) == 1:
        op = node.comparisons[0].operator
        return isinstance(op, (cst.Equal, cst.NotEqual)) and is_pure(node.left) \
            and is_pure(node.comparisons[0].comparator)
    return False


@register
class SwapCommutative(Operator):
    name = "swap_commutative"
    kind = "refactor"
    description = "swap the operands of `*`, `&`, `^`, numeric `+`, `==` or `!=`"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        cands = [n for n in m.findall(src.module, m.BinaryOperation() | m.Comparison())
                 if _swappable(n)]
        if not cands:
            return None
        node = rng.choice(cands)
        if isinstance(node, cst.BinaryOperation):
            new: cst.BaseExpression = node.with_changes(left=node.right, right=node.left)
        else:
            assert isinstance(node, cst.Comparison)
            comp = node.comparisons[0]
            new = node.with_changes(left=comp.comparator,
                                    comparisons=[comp.with_changes(comparator=node.left)])
        return self.replace(src, node, new)


#: Augmented operators and their binary forms. `x op= v` equals `x = x op v` when x is an
#: immutable number or string, which we require (see ExpandAugAssign).
_AUG = {cst.AddAssign: cst.Add, cst.SubtractAssign: cst.Subtract,
        cst.MultiplyAssign: cst.Multiply, cst.DivideAssign: cst.Divide,
        cst.FloorDivideAssign: cst.FloorDivide, cst.ModuloAssign: cst.Modulo,
        cst.PowerAssign: cst.Power, cst.LeftShiftAssign: cst.LeftShift,
        cst.RightShiftAssign: cst.RightShift}


def _immutable_names(fn: cst.FunctionDef) -> set[str]:
    """Names whose every plain assignment in `fn` is a number or string literal."""
    good: dict[str, bool] = {}
    for node in m.findall(fn, m.Assign() | m.For() | m.AnnAssign() | m.NamedExpr()
                          | m.WithItem() | m.CompFor()):
        if isinstance(node, cst.Assign):
            lit = m.matches(node.value, _NUMBER | m.SimpleString())
            for t in node.targets:
                for n in m.findall(t, m.Name()):
                    assert isinstance(n, cst.Name)
                    good[n.value] = good.get(n.value, True) and lit \
                        and isinstance(t.target, cst.Name)
        else:
            target = getattr(node, "target", None) or getattr(node, "asname", None)
            for n in m.findall(target, m.Name()) if target is not None else []:
                assert isinstance(n, cst.Name)
                good[n.value] = False
    params = {p.name.value for p in m.findall(fn.params, m.Param()) if isinstance(p, cst.Param)}
    return {k for k, v in good.items() if v and k not in params}


@register
class ExpandAugAssign(Operator):
    name = "expand_augassign"
    kind = "refactor"
    description = "expand `a += b` to `a = a + b` where `a` holds a number or string"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        cands = []
        for info in functions(src.module):
            immutable = None
            for aug in m.findall(info.node.body, m.AugAssign(target=m.Name())):
                assert isinstance(aug, cst.AugAssign) and isinstance(aug.target, cst.Name)
                if type(aug.operator) not in _AUG:
                    continue
                if immutable is None:
                    immutable = _immutable_names(info.node)
                numeric_rhs = m.matches(aug.value, _NUMBER) and not isinstance(
                    aug.operator, cst.MultiplyAssign)
                if aug.target.value in immutable or numeric_rhs:
                    cands.append(aug)
        if not cands:
            return None
        aug = rng.choice(cands)
        op = _AUG[type(aug.operator)]()
        value = aug.value
        if isinstance(value, (cst.BinaryOperation, cst.BooleanOperation, cst.Comparison,
                              cst.IfExp, cst.Lambda, cst.UnaryOperation)) and not value.lpar:
            value = value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
        new = cst.Assign(targets=[cst.AssignTarget(aug.target)],
                         value=cst.BinaryOperation(left=aug.target, operator=op, right=value))
        return self.replace(src, aug, new)


@register
class AddIdentity(Operator):
    name = "add_identity"
    kind = "refactor"
    description = "add `+ 0` or `* 1` to a number literal or a `len()` call"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        cands = []
        for info in functions(src.module):
            for stmt in info.simple:
                cands += m.findall(stmt, m.Integer() | m.Float()
                                   | m.Call(func=m.Name("len")))
        if not cands:
            return None
        node = rng.choice(cands)
        assert isinstance(node, cst.BaseExpression)
        ident = rng.choice(["+ 0", "* 1"]) if not isinstance(node, cst.Float) \
            else rng.choice(["* 1", "+ 0.0"])
        op_text, num = ident.split()
        ops = {"+": cst.Add(), "-": cst.Subtract(), "*": cst.Multiply()}
        inner = node.with_changes(lpar=[], rpar=[])
        new = cst.BinaryOperation(left=inner, operator=ops[op_text],
                                  right=cst.parse_expression(num),
                                  lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
        return self.replace(src, node, new)


@register
class ReturnToTemp(Operator):
    name = "return_to_temp"
    kind = "refactor"
    description = "assign a returned expression to a temporary variable, then return it"

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        cands = []
        for info in functions(src.module):
            for block in info.blocks:
                for i, s in enumerate(block.body):
                    if m.matches(s, m.SimpleStatementLine(body=[m.Return()])):
                        value = s.body[0].value  # type: ignore[attr-defined]
                        if value is not None and not (isinstance(value, cst.Name) and value.value
                                                         not in ("True", "False", "None")):
                            cands.append((block, i))
        if not cands:
            return None
        block, i = rng.choice(cands)
        stmt = block.body[i]
        ret = stmt.body[0]  # type: ignore[attr-defined]
        tmp = src.fresh_name(rng, ["result", "res", "out", "ret", "value", "answer"],
                             ["result_value"])
        value = ret.value
        assign = parse_stmt(f"{tmp} = x\n")
        assign = assign.with_changes(  # type: ignore[call-arg]
            body=[assign.body[0].with_changes(value=value)],  # type: ignore[attr-defined]
            leading_lines=stmt.leading_lines)
        # `return(x)` has no space after the keyword; `return tmp` needs one.
        new_ret = stmt.with_changes(
            body=[ret.with_changes(value=cst.Name(tmp),
                                   whitespace_after_return=cst.SimpleWhitespace(" "))],
            leading_lines=[])
        body = list(block.body)
        body[i:i + 1] = [assign, new_ret]
        return self.replace(src, block, block.with_changes(body=body), temp=tmp)
