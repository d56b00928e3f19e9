"""Finding places in a libcst tree: functions, the statement blocks inside them, the
statements and expressions an operator may touch, and the names a piece of code binds.
Shared by refactor and bug operators."""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst
import libcst.matchers as m

#: Calls without side effects whose result depends only on their arguments.
PURE_CALLS = frozenset({
    "len", "abs", "min", "max", "sorted", "str", "int", "float", "bool", "tuple", "list",
    "set", "frozenset", "sum", "any", "all", "ord", "chr", "round", "range", "reversed",
    "enumerate", "zip", "divmod", "pow", "repr", "hash", "isinstance", "type"})


@dataclass
class FunctionInfo:
    """One function: its node, its statement blocks and its simple statements (those
    whose innermost function is this one)."""

    node: cst.FunctionDef
    blocks: list[cst.IndentedBlock] = field(default_factory=list)
    #: Blocks that sit inside a loop of this function (break/continue are legal there).
    loop_blocks: set[int] = field(default_factory=set)
    simple: list[cst.SimpleStatementLine] = field(default_factory=list)


class _Walker(cst.CSTVisitor):
    def __init__(self) -> None:
        self.functions: list[FunctionInfo] = []
        self._stack: list[FunctionInfo] = []
        self._loops: list[int] = []

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        info = FunctionInfo(node)
        self.functions.append(info)
        self._stack.append(info)
        self._loops.append(0)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._stack.pop()
        self._loops.pop()

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._stack.append(FunctionInfo(cst.FunctionDef(cst.Name("_"), cst.Parameters(),
                                                        cst.IndentedBlock([]))))
        self._loops.append(0)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self._stack.pop()
        self._loops.pop()

    def _enter_loop(self) -> None:
        if self._loops:
            self._loops[-1] += 1

    def _leave_loop(self) -> None:
        if self._loops:
            self._loops[-1] -= 1

    def visit_For(self, node: cst.For) -> None:
        self._enter_loop()

    def leave_For(self, original_node: cst.For) -> None:
        self._leave_loop()

    def visit_While(self, node: cst.While) -> None:
        self._enter_loop()

    def leave_While(self, original_node: cst.While) -> None:
        self._leave_loop()

    def visit_IndentedBlock(self, node: cst.IndentedBlock) -> None:
        if self._stack:
            self._stack[-1].blocks.append(node)
            if self._loops[-1]:
                self._stack[-1].loop_blocks.add(id(node))

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        if self._stack:
            self._stack[-1].simple.append(node)


def functions(module: cst.Module) -> list[FunctionInfo]:
    """Every function (methods and nested functions included), in source order."""
    w = _Walker()
    module.visit(w)
    return w.functions


def is_docstring(stmt: cst.BaseStatement) -> bool:
    return m.matches(stmt, m.SimpleStatementLine(
        body=[m.Expr(value=m.SimpleString() | m.ConcatenatedString())]))


def first_free_index(block: cst.IndentedBlock) -> int:
    """First position where a statement may go without becoming or displacing a docstring
    or a `from __future__` import."""
    i = 0
    body = block.body
    while i < len(body) and (is_docstring(body[i]) if i == 0 else False):
        i += 1
    return i


def insert(block: cst.IndentedBlock, index: int, *stmts: cst.BaseStatement
           ) -> cst.IndentedBlock:
    body = list(block.body)
    body[index:index] = stmts
    return block.with_changes(body=body)


def parse_stmt(code: str) -> cst.BaseStatement:
    return cst.parse_statement(code)


def plus(expr: cst.BaseExpression, delta: int) -> cst.BaseExpression:
    """`expr + 1` / `expr - 1`, folding int literals (`n` + 1 -> `n + 1`, `3` -> `4`)."""
    if isinstance(expr, cst.Integer) and int(expr.value, 0) + delta >= 0:
        return cst.Integer(str(int(expr.value, 0) + delta))
    op = cst.Add() if delta > 0 else cst.Subtract()
    return cst.BinaryOperation(left=expr, operator=op, right=cst.Integer(str(abs(delta))))


def contains(node: cst.CSTNode, matcher: m.BaseMatcherNode) -> bool:
    return bool(m.findall(node, matcher))


#: Statements that must not be copied elsewhere (their meaning depends on where they are).
_CONTEXTUAL = (m.Break() | m.Continue() | m.Global() | m.Nonlocal()
               | m.ImportFrom(module=m.Name("__future__")))


def copyable(stmt: cst.SimpleStatementLine) -> bool:
    """A statement that may be copied into dead code of the same function: no
    break/continue (loop context), global/nonlocal or __future__ import."""
    return not is_docstring(stmt) and not contains(stmt, _CONTEXTUAL)


def is_pure(expr: cst.BaseExpression) -> bool:
    """An expression without side effects: names, literals, operators, subscripts,
    attributes and calls of PURE_CALLS builtins on pure arguments."""
    for node in m.findall(expr, m.Call() | m.Await() | m.Yield() | m.NamedExpr()
                          | m.Lambda() | m.GeneratorExp()):
        if not isinstance(node, cst.Call):
            return False
        if not (isinstance(node.func, cst.Name) and node.func.value in PURE_CALLS):
            return False
    return True


def names_in(node: cst.CSTNode) -> set[str]:
    return {n.value for n in m.findall(node, m.Name()) if isinstance(n, cst.Name)}


#: Every node that binds (or deletes) a name.
STORE = (m.AssignTarget() | m.AugAssign() | m.AnnAssign() | m.For() | m.NamedExpr()
         | m.WithItem() | m.CompFor() | m.Del() | m.ExceptHandler() | m.ImportAlias()
         | m.FunctionDef() | m.ClassDef() | m.Param() | m.MatchAs() | m.MatchStar()
         | m.MatchMapping())


def target_names(target: cst.CSTNode) -> set[str]:
    """Names an assignment target binds: `x[i] = v` and `x.a = v` bind none (they mutate
    x), `a, *b = v` binds a and b."""
    if isinstance(target, cst.Name):
        return {target.value}
    if isinstance(target, (cst.Tuple, cst.List)):
        return set().union(*(target_names(e.value) for e in target.elements))
    if isinstance(target, (cst.StarredElement, cst.AsName)):
        return target_names(target.value if isinstance(target, cst.StarredElement)
                             else target.name)
    return set()


def binds(n: cst.CSTNode) -> set[str]:
    """Names that the one node `n` (of `STORE`) binds or deletes itself."""
    if isinstance(n, (cst.FunctionDef, cst.ClassDef, cst.Param)):
        return {n.name.value}
    if isinstance(n, cst.ImportAlias):  # `import a.b` binds a; b too, to be safe
        return names_in(n.asname or n.name)
    if isinstance(n, (cst.ExceptHandler, cst.MatchAs, cst.MatchStar)):
        target: cst.CSTNode | None = n.name
    elif isinstance(n, cst.MatchMapping):
        target = n.rest
    else:
        target = getattr(n, "target", None) or getattr(n, "asname", None)
    return target_names(target) if target is not None else set()


def stored(node: cst.CSTNode) -> set[str]:
    """Names bound (or deleted) anywhere inside `node`."""
    out: set[str] = set()
    for n in m.findall(node, STORE):
        out |= binds(n)
    return out


def node_ids(*nodes: cst.CSTNode) -> set[int]:
    """Ids of `nodes` and everything inside them."""
    ids: set[int] = set()

    class _Ids(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            ids.add(id(node))
            return True

    for n in nodes:
        n.visit(_Ids())
    return ids


class _OwnContinue(cst.CSTVisitor):
    """Finds a `continue` of the loop being visited (not of a loop nested in it)."""

    def __init__(self) -> None:
        self.found = False

    def visit_Continue(self, node: cst.Continue) -> None:
        self.found = True

    def _inner_loop(self, node: cst.For | cst.While) -> bool:
        if node.orelse is not None:  # an inner loop's `else` continues the outer one
            node.orelse.visit(self)
        return False

    visit_For = _inner_loop
    visit_While = _inner_loop

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False


def own_continue(body: cst.CSTNode) -> bool:
    """Whether `body` has a `continue` that belongs to the loop it is the body of."""
    v = _OwnContinue()
    body.visit(v)
    return v.found
