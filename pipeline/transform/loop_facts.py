"""What the loop rewrites must know about one function: which names hold ints, which
hold objects made in the function, which calls cannot change anything, and whether a
loop body can change a bound.

A `range()` is evaluated once, a `while` test on every pass, so a bound may move between
the two only if nothing in the body can change it: its names are locals of the function
that the body never rebinds (no assignment of any form, `del`, `global`/`nonlocal`, or a
nested function's `nonlocal`), and for `len(x)`, `x` is immutable (a `str`/`tuple`/`bytes`
parameter or value) or the body mutates only objects the function made itself and calls
only side-effect-free builtins and functions. Two things are taken not to change
`len(x)`: a subscript read `x[i]` (a `defaultdict` read would) and iterating over a
value made before the loop (a generator that mutates `x` would). Type evidence is an
`int`/`str`/... parameter annotation or a binding whose value has that type; an
unannotated parameter could be a float, for which `range()` raises where `while` runs.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import cached_property

import libcst as cst
import libcst.matchers as m
from libcst.metadata import Scope

from pipeline.transform.base import Source
from pipeline.transform.blocks import (
    PURE_CALLS,
    STORE,
    binds,
    names_in,
    node_ids,
    stored,
    target_names,
)
from pipeline.transform.scope import dynamic_use

_INT_OPS = (cst.Add, cst.Subtract, cst.Multiply, cst.FloorDivide, cst.Modulo)
_INT_AUG = (cst.AddAssign, cst.SubtractAssign, cst.MultiplyAssign, cst.FloorDivideAssign,
            cst.ModuloAssign)
_INT_CALLS = frozenset({"len", "int", "ord"})
_STRING = m.SimpleString() | m.FormattedString() | m.ConcatenatedString()
#: Values that are a new object each time they are evaluated.
#: (Not a generator: resuming one runs code that may mutate anything.)
_NEW = (m.List() | m.Tuple() | m.Set() | m.Dict() | m.ListComp() | m.SetComp() | m.DictComp()
        | _STRING | m.Integer() | m.Float() | m.Imaginary())
_NEW_CALLS = frozenset({"list", "dict", "set", "tuple", "str", "sorted", "frozenset",
                        "bytearray", "int", "float", "reversed", "enumerate", "zip", "range"})
_IMMUTABLE_TYPES = frozenset({"str", "bytes", "tuple"})


def _bound_parts(expr: cst.BaseExpression) -> tuple[set[str], set[str]] | None:
    """(names, names under `len()`) of a bound made of ints, names and `len(name)` under
    `+ - * // %` and unary minus; None for anything else."""
    if isinstance(expr, cst.Integer):
        return set(), set()
    if isinstance(expr, cst.Name):
        return {expr.value}, set()
    if m.matches(expr, m.Call(func=m.Name("len"), args=[m.Arg(value=m.Name(), keyword=None,
                                                               star="")])):
        return set(), {expr.args[0].value.value}  # type: ignore[attr-defined]
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Minus):
        return _bound_parts(expr.expression)
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, _INT_OPS):
        left, right = _bound_parts(expr.left), _bound_parts(expr.right)
        if left is None or right is None:
            return None
        return left[0] | right[0], left[1] | right[1]
    return None


class FunctionFacts:
    """Facts about one function of a `Source`, computed when first asked for."""

    def __init__(self, src: Source, fn: cst.FunctionDef) -> None:
        self.src = src
        self.fn = fn
        self._memo: dict[tuple[str, str], bool] = {}

    @cached_property
    def scope(self) -> Scope | None:
        return self.src.scopes.get(self.fn.body.body[0]) if self.fn.body.body else None

    @cached_property
    def module_bound(self) -> Counter[str]:
        """How often each name is bound in the module: a builtin bound there may not be
        the builtin."""
        return Counter(name for n in m.findall(self.src.module, STORE) for name in binds(n))

    @cached_property
    def _dynamic(self) -> tuple[bool, set[str]]:
        d = dynamic_use(self.fn)
        return d.dynamic, d.declared

    @cached_property
    def bindings(self) -> dict[str, list[tuple[str, cst.CSTNode | None]]]:
        """Per name, how the function (nested scopes included) binds it: ("value", expr),
        ("aug", the AugAssign), ("param", the Param), ("range", a `for` over range()) or
        ("other", None)."""
        out: dict[str, list[tuple[str, cst.CSTNode | None]]] = defaultdict(list)

        def bind(target: cst.BaseExpression, value: cst.BaseExpression | None) -> None:
            if isinstance(target, cst.Name):
                out[target.value].append(("value", value) if value is not None
                                         else ("other", None))
            elif isinstance(target, (cst.Tuple, cst.List)):  # a, b = x, y: pairwise
                vals = value.elements if isinstance(value, (cst.Tuple, cst.List)) else None
                pairwise = vals is not None and len(vals) == len(target.elements) \
                    and not any(isinstance(e, cst.StarredElement)
                                for e in [*vals, *target.elements])
                for k, el in enumerate(target.elements):
                    bind(el.value, vals[k].value if pairwise and vals else None)
            else:
                for name in target_names(target):
                    out[name].append(("other", None))

        for n in m.findall(self.fn, STORE):
            if isinstance(n, cst.AugAssign):
                if isinstance(n.target, cst.Name):
                    out[n.target.value].append(("aug", n))
            elif isinstance(n, cst.Param):
                out[n.name.value].append(("param", n))
            elif isinstance(n, cst.For) and isinstance(n.target, cst.Name) \
                    and m.matches(n.iter, m.Call(func=m.Name("range"))):
                out[n.target.value].append(("range", n))
            elif isinstance(n, (cst.AnnAssign, cst.NamedExpr)):
                if n.value is not None:
                    bind(n.target, n.value)
            elif not isinstance(n, cst.AssignTarget):  # those: with their Assign, below
                for name in binds(n):
                    out[name].append(("other", None))
        for a in m.findall(self.fn, m.Assign()):
            assert isinstance(a, cst.Assign)
            for t in a.targets:
                bind(t.target, a.value)
        return out

    def builtin(self, name: str) -> bool:
        """Whether `name` surely means the builtin in this module."""
        return name not in self.module_bound

    def local(self, name: str) -> bool:
        """A variable of this function's own scope that no `global`/`nonlocal` shares and
        no dynamic frame access (`locals()`, `exec`, ...) can reach."""
        dynamic, declared = self._dynamic
        return self.scope is not None and not dynamic and name not in declared \
            and bool(self.scope.assignments[name])

    def _all(self, name: str, seen: frozenset[str], kind: str) -> bool:
        """Whether `name` has bindings and each gives a value of `kind` ("int",
        "immutable" or "new"). Names being checked count as of that kind: in a cycle
        such as `n = n + 1` the other bindings decide."""
        if name in seen:
            return True
        key = (kind, name)
        if not seen and key in self._memo:
            return self._memo[key]
        seen = seen | {name}
        check = {"int": self.int_valued, "immutable": self._immutable_expr,
                 "new": self._new_expr}[kind]
        binds_ = self.bindings.get(name) or [("other", None)]
        ok = True
        for how, node in binds_:
            if how == "value" and isinstance(node, cst.BaseExpression):
                ok = check(node, seen)
            elif how == "aug" and isinstance(node, cst.AugAssign):  # keeps the object
                ok = kind != "int" or (isinstance(node.operator, _INT_AUG)
                                       and self.int_valued(node.value, seen))
            elif how == "param" and isinstance(node, cst.Param) and node.annotation:
                ann = node.annotation.annotation
                base = ann.value if isinstance(ann, cst.Subscript) else ann
                ok = isinstance(base, cst.Name) and (
                    base.value == "int" if kind == "int"
                    else kind == "immutable" and base.value in {"int", *_IMMUTABLE_TYPES})
            else:
                ok = how == "range" and kind != "new" and self.builtin("range")
            if not ok:
                break
        if len(seen) == 1:
            self._memo[key] = ok
        return ok

    def int_valued(self, expr: cst.BaseExpression, seen: frozenset[str] = frozenset()
                   ) -> bool:
        """Whether `expr` surely evaluates to an int (or raises)."""
        if isinstance(expr, cst.Integer):
            return True
        if isinstance(expr, cst.UnaryOperation):
            return isinstance(expr.operator, (cst.Minus, cst.Plus)) \
                and self.int_valued(expr.expression, seen)
        if isinstance(expr, cst.BinaryOperation):
            return isinstance(expr.operator, _INT_OPS) and self.int_valued(expr.left, seen) \
                and self.int_valued(expr.right, seen)
        if isinstance(expr, cst.Call):
            return isinstance(expr.func, cst.Name) and expr.func.value in _INT_CALLS \
                and self.builtin(expr.func.value) and bool(expr.args) \
                and not any(a.star or a.keyword for a in expr.args)
        return isinstance(expr, cst.Name) and self._all(expr.value, seen, "int")

    def _immutable_expr(self, expr: cst.BaseExpression, seen: frozenset[str]) -> bool:
        if m.matches(expr, _STRING) or self.int_valued(expr, seen):
            return True
        if isinstance(expr, cst.Call):  # str(...), "".join(...)
            return m.matches(expr.func, m.Name("str")) and self.builtin("str") \
                or m.matches(expr.func, m.Attribute(value=_STRING))
        if isinstance(expr, cst.BinaryOperation):  # "x" + s is a str (or raises)
            return m.matches(expr.left, _STRING) or m.matches(expr.right, _STRING)
        return isinstance(expr, cst.Name) and self._all(expr.value, seen, "immutable")

    def _new_expr(self, expr: cst.BaseExpression, seen: frozenset[str]) -> bool:
        if m.matches(expr, _NEW):
            return True
        if isinstance(expr, cst.Call):
            return isinstance(expr.func, cst.Name) and expr.func.value in _NEW_CALLS \
                and self.builtin(expr.func.value)
        if isinstance(expr, cst.BinaryOperation):  # [0] * n, "" + s: a new list or str
            return m.matches(expr.left, _NEW) or m.matches(expr.right, _NEW)
        return isinstance(expr, cst.Name) and self._all(expr.value, seen, "new")

    def immutable(self, name: str) -> bool:
        """Whether `name` always holds an immutable value (str, bytes, tuple, int)."""
        return self._all(name, frozenset(), "immutable")

    def own(self, name: str) -> bool:
        """Whether every binding of `name` makes a new object (a display, literal or
        constructor call; `+=` keeps it): nothing else holds it, so mutating it changes
        no other name's value."""
        return self._all(name, frozenset(), "new")

    def pure_function(self, name: str) -> bool:
        """A function of this module, bound once, whose body calls only side-effect-free
        builtins (or itself), touches no attribute, stores into no subscript and
        declares no global: calling it changes nothing."""
        key = ("pure", name)
        if key not in self._memo:
            self._memo[key] = self._pure_function(name)
        return self._memo[key]

    def _pure_function(self, name: str) -> bool:
        defs = m.findall(self.src.module, m.FunctionDef(name=m.Name(name)))
        if len(defs) != 1 or self.module_bound[name] != 1:
            return False
        fn = defs[0]
        assert isinstance(fn, cst.FunctionDef)
        if fn.decorators or m.findall(fn.body, m.Attribute() | m.Global() | m.Nonlocal()
                                      | m.Yield() | m.Await() | m.Lambda() | m.FunctionDef()
                                      | m.ClassDef() | m.Del()):
            return False
        for n in m.findall(fn.body, m.Call() | m.AssignTarget() | m.AugAssign() | m.For()):
            if isinstance(n, cst.Call):
                if not (isinstance(n.func, cst.Name) and (n.func.value == name or (
                        n.func.value in PURE_CALLS and self.builtin(n.func.value)))):
                    return False
            elif target_names(n.target) != names_in(n.target):  # type: ignore[union-attr]
                return False  # a subscript or attribute store
        return True

    def _callable_ok(self, f: cst.BaseExpression, protect: str) -> bool:
        """A call of `f` cannot change `protect` (nor anything else the caller sees,
        except objects the function made)."""
        if isinstance(f, cst.Name):
            return f.value in PURE_CALLS and self.builtin(f.value) or self.pure_function(f.value)
        if isinstance(f, cst.Attribute):  # a method of an own object or of an immutable
            v = f.value
            return m.matches(v, _STRING) or isinstance(v, cst.Name) and v.value != protect \
                and (self.own(v.value) or self.immutable(v.value))
        return False

    def mutation_free(self, body: cst.CSTNode, protect: str) -> bool:
        """Whether running `body` cannot change the value of `protect`: it mutates only
        objects the function made itself (never `protect`'s), calls only side-effect-free
        builtins, pure functions of the module and methods of its own objects or of
        immutable values (with no `key=` function that could do more), and does not
        suspend (`yield`, `await`), which would let the caller run meanwhile."""
        if m.findall(body, m.Yield() | m.Await()):
            return False

        def owned(e: cst.BaseExpression) -> bool:  # x, x[i], x.a of an own x
            while isinstance(e, (cst.Subscript, cst.Attribute)):
                e = e.value
            return isinstance(e, cst.Name) and e.value != protect and self.own(e.value)

        for n in m.findall(body, m.Call() | m.AssignTarget() | m.AugAssign() | m.Del()
                           | m.For()):
            if isinstance(n, cst.Call):
                ok = self._callable_ok(n.func, protect) and all(
                    isinstance(a.value, cst.Lambda) or self._callable_ok(a.value, protect)
                    for a in n.args if a.keyword is not None and a.keyword.value == "key")
            elif isinstance(n, cst.AugAssign):  # in place on a list: a mutation
                t = n.target
                ok = owned(t) or isinstance(t, cst.Name) and t.value != protect \
                    and self.immutable(t.value)
            else:  # names are rebound (checked elsewhere); x[i] = v mutates x
                target = n.target  # type: ignore[union-attr]
                parts = [e.value for e in target.elements] \
                    if isinstance(target, (cst.Tuple, cst.List)) else [target]
                ok = all(isinstance(p, cst.Name) or owned(p) for p in parts)
            if not ok:
                return False
        return True

    def confined(self, name: str, *regions: cst.CSTNode) -> bool:
        """Whether `name` is a local of this function that only its own code inside
        `regions` binds or reads: no closure or comprehension captures it, so its value
        after the regions is never seen."""
        if not self.local(name) or self.scope is None:
            return False
        inside = node_ids(*regions)
        for a in self.scope.assignments[name]:
            if id(getattr(a, "node", None)) not in inside:
                return False
            if any(r.scope is not self.scope or id(r.node) not in inside
                   for r in a.references):
                return False
        return all(id(acc.node) in inside for acc in self.scope.accesses[name])

    def stable_bound(self, expr: cst.BaseExpression, body: cst.CSTNode, *, need_int: bool
                     ) -> bool:
        """Whether loop bound `expr` has the same value on every pass of a loop whose
        body (less the counter's increment) is `body`: ints, names and `len(name)`
        under `+ - * // %`, every name a local that the body does not rebind, every
        `len()` of an immutable value or of one the body cannot mutate. With `need_int`,
        the bound must also surely be an int."""
        parts = _bound_parts(expr)
        if parts is None or (need_int and not self.int_valued(expr)):
            return False
        names, lens = parts
        if lens and not self.builtin("len"):
            return False
        rebound = stored(body)
        if any(n in rebound or not self.local(n) for n in names | lens):
            return False
        return all(self.immutable(x) or self.mutation_free(body, x) for x in lens)
