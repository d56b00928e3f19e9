"""The operator contract, the parsed source that operators share, and the registry.

An operator is a small named rewrite of one kind: `refactor` (behaviour must not change),
`augment` (GenCode's text edits, for repair pairs) or `bug` (a realistic mutation that a
test should catch). `Operator.apply(src, rng)` returns a `Variant` or None when the
operator cannot apply to this code; it never returns a copy of the input.

`Source` parses a sample once (libcst module, scope metadata, identifier set) and every
operator reads the same immutable tree, so a sample with many variants pays for one parse.
Randomness comes only from `rng_for(sample_id, op, seed=...)`: reruns with the same run
seed give identical variants.
"""

from __future__ import annotations

import builtins
import hashlib
import keyword
import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Literal

import libcst as cst
from libcst.metadata import MetadataWrapper, Scope, ScopeProvider

Kind = Literal["refactor", "augment", "bug"]
KINDS: tuple[Kind, ...] = ("refactor", "augment", "bug")

#: Names no rename may introduce: keywords, builtins and dunders Python gives meaning to.
RESERVED: frozenset[str] = frozenset(
    set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins)) | {"self", "cls"})


@dataclass
class Variant:
    """One rewrite of a sample: the new code (and tests, which renames may touch) plus
    the edit that produced it, exact enough to replay (`edit`)."""

    op: str
    kind: Kind
    code: str
    tests: str
    edit: dict[str, Any] = field(default_factory=dict)
    #: Whether the new code parses (always True for refactor and bug variants).
    parses: bool = True


def rng_for(sample_id: str, op: str, *, seed: int) -> random.Random:
    """The random stream of one operator on one sample under the run's `seed`: same id,
    op and seed, same stream. Seed 0 gives the streams of the runs before the seed was
    mixed in."""
    key = f"{sample_id}\x00{op}" if seed == 0 else f"{sample_id}\x00{op}\x00{seed}"
    digest = hashlib.sha256(key.encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class Source:
    """A sample's code and tests, parsed lazily and shared by every operator."""

    def __init__(self, code: str, tests: str = "", sample_id: str = "") -> None:
        self.code = code
        self.tests = tests
        self.sample_id = sample_id

    @cached_property
    def module(self) -> cst.Module:
        """The libcst tree of `code` (raises libcst.ParserSyntaxError if it does not parse)."""
        return cst.parse_module(self.code)

    @cached_property
    def wrapper(self) -> MetadataWrapper:
        return MetadataWrapper(self.module, unsafe_skip_copy=True)

    @cached_property
    def scopes(self) -> dict[cst.CSTNode, Scope | None]:
        """Scope of every node (libcst ScopeProvider), resolved once per sample."""
        return dict(self.wrapper.resolve(ScopeProvider))

    @cached_property
    def tests_module(self) -> cst.Module | None:
        """The libcst tree of `tests`, or None if they do not parse."""
        try:
            return cst.parse_module(self.tests)
        except cst.ParserSyntaxError:
            return None

    @cached_property
    def identifiers(self) -> frozenset[str]:
        """Every identifier spelled in code or tests (names, attributes, keywords of
        calls): a fresh name avoids all of them, so it can capture or clobber nothing."""
        names: set[str] = set()
        collector = _NameCollector(names)
        self.module.visit(collector)
        if self.tests_module is not None:
            self.tests_module.visit(collector)
        else:
            names.update(self.tests.replace(".", " ").split())
        return frozenset(names)

    def code_for(self, node: cst.CSTNode) -> str:
        """Source text of one node of `module`."""
        return self.module.code_for_node(node)

    def fresh_name(self, rng: random.Random, candidates: list[str],
                   fallback: list[str] | tuple[str, ...] = ()) -> str:
        """A valid identifier that appears nowhere in code or tests and is not reserved:
        the first free one of `candidates` in rng order, else of `fallback`, else a
        numbered form of the first candidate."""
        used = self.identifiers | RESERVED
        first = ""
        for tier in (candidates, fallback):
            pool = list(dict.fromkeys(c for c in tier if c.isidentifier()))
            first = first or (pool[0] if pool else "")
            rng.shuffle(pool)
            for name in pool:
                if name not in used:
                    return name
        base = first or "value"
        n = 2
        while f"{base}_{n}" in used:
            n += 1
        return f"{base}_{n}"


class _NameCollector(cst.CSTVisitor):
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def visit_Name(self, node: cst.Name) -> None:
        self.names.add(node.value)


class Operator:
    """Base of every operator. Subclasses set `name`, `kind`, `description` and
    implement `apply`; `register` adds them to `OPERATORS`."""

    name: ClassVar[str] = ""
    kind: ClassVar[Kind] = "refactor"
    #: One line on what the operator does (shown in the per-operator table and in the
    #: answer of bug-detection samples).
    description: ClassVar[str] = ""

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        """The rewritten sample, or None if the operator does not apply to this code."""
        raise NotImplementedError

    def variant(self, src: Source, code: str, edit: dict[str, Any], tests: str | None = None
                ) -> Variant | None:
        """A Variant, or None when the rewrite left the code unchanged."""
        if code == src.code and (tests is None or tests == src.tests):
            return None
        return Variant(self.name, self.kind, code, src.tests if tests is None else tests,
                       {"op": self.name, **edit})

    def replace(self, src: Source, old: cst.CSTNode, new: cst.CSTNode,
                **edit: Any) -> Variant | None:
        """Replace one node of `src.module` (by identity) and record before/after text."""
        module = src.module.deep_replace(old, new)
        assert isinstance(module, cst.Module)
        if isinstance(old, cst.BaseExpression):
            edit = {"before": src.code_for(old), "after": src.module.code_for_node(new), **edit}
        return self.variant(src, module.code, edit)


#: Every registered operator, by name.
OPERATORS: dict[str, Operator] = {}


def register(cls: type[Operator]) -> type[Operator]:
    """Class decorator: instantiate the operator and add it to `OPERATORS`."""
    if not cls.name or cls.name in OPERATORS:
        raise ValueError(f"operator name {cls.name!r} is empty or already registered")
    OPERATORS[cls.name] = cls()
    return cls


def operators(kind: Kind | None = None) -> list[Operator]:
    """Registered operators (of one kind), in registration order."""
    _load_all()
    return [op for op in OPERATORS.values() if kind is None or op.kind == kind]


def _load_all() -> None:
    from pipeline.transform import (  # noqa: F401
        augment,
        bugs,
        refactor_blocks,
        refactor_exprs,
        refactor_loops,
        refactor_names,
    )
