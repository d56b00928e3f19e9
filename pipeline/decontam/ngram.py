"""N-gram containment against benchmark items: the classical check, which catches copies.

Instructions are lowercased and cut into words (runs of letters and digits); code into the
identifier-normalised tokens of `pipeline.minhash.code_tokens` (names, numbers and strings
become placeholders, comments and layout go), so a copy with renamed variables still
matches. A record's score against an item is the number of distinct n-grams they share
over the smaller of their two n-gram counts, i.e. the containment of the shorter side in
the longer: a benchmark problem pasted inside a longer request scores 1.0. At least
`min_shared` shared n-grams are required, so that two tiny texts do not match on one.
An item shorter than n tokens is one n-gram of all its tokens.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import xxhash

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lowercased words of a text (runs of a-z and 0-9)."""
    return _WORD.findall(text.lower())


def code_words(code: str) -> list[str]:
    """Identifier-normalised code tokens (see pipeline.minhash.code_tokens)."""
    from pipeline.minhash import code_tokens

    return code_tokens(code)


def ngram_set(tokens: Sequence[str], n: int) -> set[int]:
    """64-bit hashes of the distinct n-grams of `tokens` (one n-gram if shorter)."""
    if not tokens:
        return set()
    if len(tokens) <= n:
        return {xxhash.xxh64_intdigest("\x1f".join(tokens).encode())}
    return {xxhash.xxh64_intdigest("\x1f".join(tokens[i:i + n]).encode())
            for i in range(len(tokens) - n + 1)}


@dataclass(frozen=True)
class NgramHit:
    item: int  # index into the indexed items
    score: float
    shared: int


class NgramIndex:
    """An inverted index of the benchmark items' n-grams under one tokenizer."""

    def __init__(self, texts: Sequence[str], n: int,
                 tokenize: Callable[[str], list[str]], min_shared: int = 3) -> None:
        self.n = n
        self.tokenize = tokenize
        self.min_shared = min_shared
        self.sizes: list[int] = []
        self.postings: dict[int, list[int]] = {}
        for i, text in enumerate(texts):
            grams = ngram_set(tokenize(text), n) if text else set()
            self.sizes.append(len(grams))
            for g in grams:
                self.postings.setdefault(g, []).append(i)

    def best(self, text: str) -> NgramHit | None:
        """The item whose n-grams contain, or are contained in, most of `text`'s."""
        if not text:
            return None
        grams = ngram_set(self.tokenize(text), self.n)
        if not grams:
            return None
        shared: Counter[int] = Counter()
        for g in grams:
            for i in self.postings.get(g, ()):
                shared[i] += 1
        best: NgramHit | None = None
        for i, k in shared.items():
            if k < min(self.min_shared, len(grams), self.sizes[i]):
                continue
            score = k / min(len(grams), self.sizes[i])
            if best is None or (score, -i) > (best.score, -best.item):
                best = NgramHit(i, score, k)
        return best
