"""Syntax-breaking text augmentations after GenCode: synonym replacement of an identifier,
random token insertion, random swap of statements, random token deletion, and
back-translation-style rewording of comments and docstrings.

They work on tree-sitter tokens and record every edit as character-offset replacements
on the original (`edit["replacements"]`, applied right to left), so the repair pair
(broken -> original) is exact: `apply_replacements(original, r) == variant`.
"""

from __future__ import annotations

import random
import re
from typing import Any

from tree_sitter import Node

from pipeline.transform.base import Operator, Source, Variant, register
from pipeline.transform.scope import name_candidates
from pipeline.transform.verify import parses, ts_parse

#: Word-level paraphrases for comments and docstrings (back-translation stand-in).
PARAPHRASES: dict[str, list[str]] = {
    "return": ["give back", "yield"], "returns": ["gives back", "yields"],
    "given": ["provided", "supplied"], "list": ["sequence", "array"],
    "number": ["value", "integer"], "numbers": ["values", "integers"],
    "string": ["text", "str"], "check": ["test", "verify"], "if": ["whether"],
    "find": ["locate", "determine"], "each": ["every"], "all": ["every one of the"],
    "first": ["initial"], "last": ["final"], "largest": ["biggest", "maximum"],
    "smallest": ["minimum", "least"], "element": ["item", "entry"],
    "elements": ["items", "entries"], "input": ["argument", "given value"],
    "function": ["routine", "procedure"], "write": ["implement", "create"],
    "count": ["number", "tally"], "sum": ["total"], "the": ["the"], "is": ["is"],
    "create": ["build", "make"], "contains": ["includes", "has"], "empty": ["blank"],
    "should": ["must", "ought to"], "example": ["instance", "sample"],
}

_STATEMENT_BLOCKS = ("block", "module")


def apply_replacements(text: str, replacements: list[dict[str, Any]]) -> str:
    """Apply non-overlapping {"start", "end", "new"} character replacements to `text`."""
    for r in sorted(replacements, key=lambda r: -r["start"]):
        text = text[:r["start"]] + r["new"] + text[r["end"]:]
    return text


def _leaves(node: Node) -> list[Node]:
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        if n.child_count == 0 or n.type == "string":
            if n.end_byte > n.start_byte:
                out.append(n)
        else:
            stack.extend(reversed(n.children))
    return out


class _TextOp(Operator):
    kind = "augment"

    def edits(self, src: Source, data: bytes, rng: random.Random
              ) -> list[tuple[int, int, bytes]] | None:
        """Byte-range replacements on the UTF-8 source, or None if not applicable."""
        raise NotImplementedError

    def apply(self, src: Source, rng: random.Random) -> Variant | None:
        data = src.code.encode("utf-8")
        edits = self.edits(src, data, rng)
        if not edits:
            return None
        reps = []
        for start, end, new in edits:
            cstart = len(data[:start].decode("utf-8", "replace"))
            cend = cstart + len(data[start:end].decode("utf-8", "replace"))
            reps.append({"start": cstart, "end": cend,
                         "old": data[start:end].decode("utf-8", "replace"),
                         "new": new.decode("utf-8")})
        code = apply_replacements(src.code, reps)
        v = self.variant(src, code, {"replacements": reps})
        if v is not None:
            v.parses = parses(code)
        return v


@register
class SynonymIdentifier(_TextOp):
    name = "synonym_identifier"
    description = "replace one occurrence of an identifier with a synonym"

    def edits(self, src: Source, data: bytes, rng: random.Random
              ) -> list[tuple[int, int, bytes]] | None:
        ids = [n for n in _leaves(ts_parse(src.code).root_node) if n.type == "identifier"]
        if not ids:
            return None
        n = rng.choice(ids)
        old = data[n.start_byte:n.end_byte].decode()
        syns, fallback = name_candidates(old)
        return [(n.start_byte, n.end_byte, rng.choice(syns or fallback).encode())]


@register
class RandomInsertion(_TextOp):
    name = "random_insertion"
    description = "insert a copy of a random token at a random token boundary"

    def edits(self, src: Source, data: bytes, rng: random.Random
              ) -> list[tuple[int, int, bytes]] | None:
        toks = [n for n in _leaves(ts_parse(src.code).root_node) if n.type != "string"]
        if len(toks) < 2:
            return None
        tok = data[(t := rng.choice(toks)).start_byte:t.end_byte]
        at = rng.choice(toks).start_byte
        return [(at, at, tok + b" ")]


@register
class RandomDeletion(_TextOp):
    name = "random_deletion"
    description = "delete a random token"

    def edits(self, src: Source, data: bytes, rng: random.Random
              ) -> list[tuple[int, int, bytes]] | None:
        toks = [n for n in _leaves(ts_parse(src.code).root_node)
                if n.type not in ("string", "comment") and data[n.start_byte:n.end_byte].strip()]
        if not toks:
            return None
        t = rng.choice(toks)
        return [(t.start_byte, t.end_byte, b"")]


@register
class RandomSwap(_TextOp):
    name = "random_swap"
    description = "swap two statements of the same block"

    def edits(self, src: Source, data: bytes, rng: random.Random
              ) -> list[tuple[int, int, bytes]] | None:
        pairs = []
        stack = [ts_parse(src.code).root_node]
        while stack:
            n = stack.pop()
            stack.extend(n.children)
            if n.type in _STATEMENT_BLOCKS:
                stmts = [c for c in n.named_children if c.type != "comment"
                         and not (c.type == "expression_statement"
                                  and c.named_children and c.named_children[0].type == "string")]
                for a, b in zip(stmts, stmts[1:], strict=False):
                    if data[a.start_byte:a.end_byte] != data[b.start_byte:b.end_byte]:
                        pairs.append((n.type == "block", a, b))
        if any(inner for inner, _, _ in pairs):  # prefer statements inside functions
            pairs = [p for p in pairs if p[0]]
        if not pairs:
            return None
        _, a, b = rng.choice(pairs)
        ta, tb = data[a.start_byte:a.end_byte], data[b.start_byte:b.end_byte]
        return [(a.start_byte, a.end_byte, tb), (b.start_byte, b.end_byte, ta)]


_WORD = re.compile(rb"[A-Za-z]+")


@register
class RewordComments(_TextOp):
    name = "reword_comments"
    description = "paraphrase words of comments and docstrings"

    def edits(self, src: Source, data: bytes, rng: random.Random
              ) -> list[tuple[int, int, bytes]] | None:
        spans = [n for n in _leaves(ts_parse(src.code).root_node)
                 if n.type == "comment" or (n.type == "string" and n.parent is not None
                                            and n.parent.type == "expression_statement")]
        edits = []
        for n in spans:
            for w in _WORD.finditer(data, n.start_byte, n.end_byte):
                word = w.group().decode()
                alts = [a for a in PARAPHRASES.get(word.lower(), []) if a != word.lower()]
                if alts and rng.random() < 0.5:
                    new = rng.choice(alts)
                    new = new.capitalize() if word[0].isupper() else new
                    edits.append((w.start(), w.end(), new.encode()))
        return edits or None
