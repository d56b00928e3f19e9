"""Near-duplicate detection of code: vectorised MinHash signatures, `datasketch` LSH.

Tokens (`code_tokens`). Copies of a function that differ by renamed variables, re-
indentation, re-wrapped lines, comments or string contents give the same tokens: identifiers
that are not hard keywords or builtins become `ID` (soft keywords such as `match` are
identifiers), except attribute names after a dot, which name library behaviour
(`heapq.nsmallest` vs `heapq.nlargest`) rather than a local choice and are kept; numbers
become `NUM`, string literals (docstrings, f-strings) `STR`; whitespace, line breaks,
indentation and comments are dropped; keywords, builtins and operators stay. Python is lexed
by one compiled regex with the token rules of the `tokenize` module (the tests pin it to
`tokenize` on every MBPP solution): about 5x faster than `tokenize` on Python 3.11, whose
pure-Python loop alone caps 1 KB documents below 2,000 docs/s, and the same on every Python
version (`tokenize` splits f-strings from 3.12 on). Code that is not Python lexically (a
character Python has no token for, such as `` ` `` `$` `?` or a lone `!`; an unterminated
string; unbalanced brackets; `) {` or `=>`, never valid Python) goes to a C-like lexer (`//`
and `/* */` comments, template strings, JavaScript keywords and globals kept), so JavaScript
works too; `language=` skips the guess.

Signatures (`MinHasher`). Shingles are word n-grams of tokens (`ngram`, default 5): each
token is hashed with xxh64 (seed 0; never Python's per-process `hash`), a shingle is a
position-weighted sum of its token hashes through the MurmurHash3 64-bit finaliser (its top
32 bits for the 32-bit schemes). Code with fewer than `ngram` tokens is one shingle of all
its tokens; code with none (empty, only comments) is the shingle of the empty list, so all
empty code is one near-duplicate group. The permutations are datasketch's own
(`MinHash(num_perm, seed, scheme=...).permutations`), applied to all shingles of a batch of
documents at once in numpy (permutations x shingles, then a segmented min). `scheme`:
"affine32" (default, as datasketch 2's `MinHash(num_perm, seed)`: `a * fmix32(h) + b mod
2^32`, unbiased on large sets and the fastest), "affine64", or "legacy" (datasketch 1's
`(a * h + b) mod (2^61 - 1)` truncated to 32 bits, computed as datasketch does, the product
wrapping at 2^64). A row equals the `hashvalues` of a datasketch `MinHash` updated with the
same shingle hashes, so `LeanMinHash(seed=seed, hashvalues=row, scheme=scheme)` goes into a
`MinHashLSH` as is. `num_perm` (128) sets the estimate's error, about sqrt(J(1-J)/num_perm):
0.035 at J = 0.8.

Index (`NearDuplicateIndex`, `find_near_duplicates`). LSH bands are what datasketch's
optimiser picks for `threshold` (0.8) with false-positive/false-negative weights (0.05,
0.95): 16 bands of 8 rows for 0.8 and 128 permutations. Every candidate is checked by
estimated Jaccard (the share of equal signature entries) >= threshold, so a false positive
of LSH costs one vector comparison, while a missed candidate is a duplicate kept: a pair at
0.8 becomes a candidate 95% of the time (datasketch's even weights, 9 x 13: 40%), one at
0.85 99.4%. Matches are ordered by (-similarity, insertion order), so results never depend
on set or dict order and are the same on every rerun.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Sequence
from itertools import chain, islice
from typing import Literal

import numpy as np
import xxhash
from datasketch import LeanMinHash, MinHash, MinHashLSH

Scheme = Literal["affine32", "affine64", "legacy"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: LSH (false positive, false negative) weights; see the module docstring.
LSH_WEIGHTS = (0.05, 0.95)

# Hard keywords and the builtins of Python 3.11, frozen so tokens do not change with the
# interpreter. Soft keywords (match, case, _) are common variable names: they become ID.
_PY_KEEP = _words("""
False None True and as assert async await break class continue def del elif else except
finally for from global if import in is lambda nonlocal not or pass raise return try while
with yield abs aiter all anext any ascii bin bool breakpoint bytearray bytes callable chr
classmethod compile complex delattr dict dir divmod enumerate eval exec filter float format
frozenset getattr globals hasattr hash help hex id input int isinstance issubclass iter len
list locals map max memoryview min next object oct open ord pow print property range repr
reversed round set setattr slice sorted staticmethod str sum super tuple type vars zip
Ellipsis NotImplemented BaseException BaseExceptionGroup Exception ExceptionGroup
ArithmeticError AssertionError AttributeError BlockingIOError BrokenPipeError BufferError
ChildProcessError ConnectionAbortedError ConnectionError ConnectionRefusedError
ConnectionResetError EOFError EnvironmentError FileExistsError FileNotFoundError
FloatingPointError GeneratorExit IOError ImportError IndentationError IndexError
InterruptedError IsADirectoryError KeyError KeyboardInterrupt LookupError MemoryError
ModuleNotFoundError NameError NotADirectoryError NotImplementedError OSError OverflowError
PermissionError ProcessLookupError RecursionError ReferenceError RuntimeError
StopAsyncIteration StopIteration SyntaxError SystemError SystemExit TabError TimeoutError
TypeError UnboundLocalError UnicodeDecodeError UnicodeEncodeError UnicodeError
UnicodeTranslateError ValueError ZeroDivisionError Warning UserWarning DeprecationWarning
""")
_JS_KEEP = _words("""
break case catch class const continue debugger default delete do else export extends
finally for function if import in instanceof let new return super switch this throw try
typeof var void while with yield async await static of get set null true false undefined
NaN Infinity console Math JSON Object Array String Number Boolean Map Set WeakMap Promise
Date RegExp Error TypeError RangeError Symbol BigInt parseInt parseFloat isNaN require
module exports
""")


# One match per token, after whitespace; the groups in this order in both lexers. A name
# that starts a string prefix is a string; `skip` (comments, line continuations) is matched,
# not searched past, so nothing after a comment is read as tokens; `err` is a character with
# no token of its own.
_PFX = r"(?:[rR][bBfF]?|[bBfF][rR]?|[uU])"
_PY_RE = re.compile(
    r"[ \t\f\r\n]*(?:(?P<name>(?!" + _PFX + r"['\"])[^\W\d]\w*)"
    r"|(?P<op>\*\*=?|//=?|>>=?|<<=?|\.\.\.|->|:=|[-+*/%&|^@<>=!]=|\.(?!\d)"
    r"|[-+*/%&|^@<>=:;,()\[\]{}~])"
    r"|(?P<str>" + _PFX + r"?(?:'''[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*'''"
    r'|"""[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*"""'
    r"|'[^'\\\n]*(?:\\.[^'\\\n]*)*'|\"[^\"\\\n]*(?:\\.[^\"\\\n]*)*\"))"
    r"|(?P<num>0[xX](?:_?[0-9a-fA-F])+|0[bB](?:_?[01])+|0[oO](?:_?[0-7])+"
    r"|(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][-+]?\d(?:_?\d)*)?[jJ]?)"
    r"|(?P<skip>#[^\r\n]*|\\\r?\n)|(?P<err>\S))", re.S)
_JS_RE = re.compile(
    r"\s*(?:(?P<name>[^\W\d][\w$]*|\$[\w$]*)"
    r"|(?P<op>>>>=?|\.\.\.|===|!==|\*\*=?|<<=?|>>=?|&&=?|\|\|=?|\?\?=?|=>|\?\.(?!\d)"
    r"|\+\+|--|[-+*/%&|^<>=!]=|\.(?!\d)|/(?![/*])|[-+*%&|^<>=!?:;,()\[\]{}~@#])"
    r"|(?P<str>'[^'\\\n]*(?:\\.[^'\\\n]*)*'|\"[^\"\\\n]*(?:\\.[^\"\\\n]*)*\""
    r"|`[^`\\]*(?:\\.[^`\\]*)*`)"
    r"|(?P<num>0[xXbBoO][0-9a-fA-F_]+n?|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)"
    r"(?:[eE][-+]?\d+)?n?)|(?P<skip>//[^\n]*|/\*.*?\*/)|(?P<err>\S))", re.S)
# In the joined tokens of the Python lexer: an `err` character (none of Python's token
# characters, or a lone `!`), `) {` or `=>` (never valid Python): then the code is not Python.
_NOT_PYTHON = re.compile(r"[^\w\-+*/%&|^@<>=!:;,.()\[\]{}~]|!(?!=)|\)\{|=>")


def _lex(pattern: re.Pattern[str], keep: frozenset[str], code: str) -> list[str]:
    out: list[str] = []
    for name, op, s, _num, skip, err in pattern.findall(code):
        if skip:
            continue
        if name:
            # An attribute (`heapq.nsmallest` vs `heapq.nlargest`) names library behaviour,
            # not a local choice: kept, so that two one-liners of the same shape differ.
            out.append(name if name in keep or (out and out[-1] in _DOTS) else "ID")
        else:
            out.append(op or err or ("STR" if s else "NUM"))
    return out


_DOTS = frozenset({".", "?."})


def code_tokens(code: str, language: str | None = None) -> list[str]:
    """Normalised tokens of `code` (module docstring). `language`: "python" forces the Python
    lexer, any other value the C-like one; None (default) tries Python, then C-like."""
    if language in (None, "python"):
        tokens = _lex(_PY_RE, _PY_KEEP, code)
        if language == "python":
            return tokens
        joined = "".join(tokens)  # brackets occur in no token but their own
        if (not _NOT_PYTHON.search(joined)
                and all(joined.count(o) == joined.count(c) for o, c in ("()", "[]", "{}"))):
            return tokens
    return _lex(_JS_RE, _JS_KEEP, code)


class _TokenHashes(dict):
    """Token -> xxh64 of its UTF-8 bytes, memoised (normalised vocabularies are small)."""

    def __missing__(self, token: str) -> int:
        value = self[token] = xxhash.xxh64_intdigest(token.encode("utf-8"))
        return value


_TOKEN_HASHES = _TokenHashes()
_U64 = np.uint64


# MurmurHash3 finalisers (shift, multiplier, shift, multiplier, shift), as datasketch's.
_FMIX = {32: (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16),
         64: (33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33)}


def _fmix(h: np.ndarray, width: int) -> np.ndarray:
    """The MurmurHash3 finaliser over uint32 (width 32) or uint64 (width 64) arrays."""
    s1, m1, s2, m2, s3 = (h.dtype.type(v) for v in _FMIX[width])
    h = (h ^ (h >> s1)) * m1
    h = (h ^ (h >> s2)) * m2
    return h ^ (h >> s3)


class MinHasher:
    """MinHash signatures of code, equal to datasketch's `MinHash(num_perm, seed, scheme)`
    updated with `shingle_hashes(code)`; one row of `num_perm` values per document."""

    def __init__(self, num_perm: int = 128, seed: int = 1, ngram: int = 5,
                 scheme: Scheme = "affine32", language: str | None = None,
                 batch_tokens: int = 16384) -> None:
        if ngram < 1:
            raise ValueError(f"ngram must be at least 1, got {ngram}")
        self.num_perm, self.seed, self.ngram, self.scheme = num_perm, seed, ngram, scheme
        self.language, self.batch_tokens = language, batch_tokens
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme=scheme).permutations
        # (num_perm, 1): permutations along rows, shingles along the contiguous axis.
        self._a, self._b, self.dtype = a[:, None], b[:, None], a.dtype
        # Odd 64-bit multipliers, one per position in a shingle.
        self._weights = [_U64(xxhash.xxh64_intdigest(f"shingle-{j}".encode()) | 1)
                         for j in range(ngram)]

    def _shingles(self, token_lists: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """All shingle hashes of the token lists, concatenated, and where each list's start.

        Each list is followed by `ngram` zeros, so a list shorter than `ngram` (even empty)
        gives one window: the weighted sum of all its tokens."""
        n = self.ngram
        pad = (0,) * n
        flat = np.fromiter(chain.from_iterable(chain(map(_TOKEN_HASHES.__getitem__, t), pad)
                                               for t in token_lists), _U64)
        lens = np.fromiter(map(len, token_lists), np.int64, len(token_lists))
        offsets = np.cumsum(lens + n) - (lens + n)
        counts = np.maximum(lens - n + 1, 1)
        starts = np.cumsum(counts) - counts
        acc = flat[:len(flat) - n + 1] * self._weights[0]
        for j in range(1, n):
            acc += flat[j:len(flat) - n + 1 + j] * self._weights[j]
        h = _fmix(acc[np.arange(counts.sum()) + np.repeat(offsets - starts, counts)], 64)
        return (h if self.scheme == "affine64" else h >> _U64(32)), starts

    def shingle_hashes(self, code: str) -> np.ndarray:
        """The hash of each token `ngram`-gram of `code` (uint64; < 2^32 unless affine64)."""
        return self._shingles([code_tokens(code, self.language)])[0]

    def _batch(self, token_lists: Sequence[list[str]]) -> np.ndarray:
        hashes, starts = self._shingles(token_lists)
        if self.scheme == "legacy":
            phv = (self._a * hashes[None, :] + self._b) % _U64((1 << 61) - 1)
            phv &= _U64((1 << 32) - 1)
        else:
            phv = self._a * _fmix(hashes.astype(self.dtype), 8 * self.dtype.itemsize)[None, :]
            phv += self._b
        return np.ascontiguousarray(np.minimum.reduceat(phv, starts, axis=1).T)

    def signature(self, code: str) -> np.ndarray:
        """The signature of one document, shape (num_perm,)."""
        return self.signatures([code])[0]

    def signatures(self, codes: Iterable[str]) -> np.ndarray:
        """Signatures of many documents, shape (n, num_perm), computed `batch_tokens`
        tokens at a time in shared numpy calls."""
        rows: list[np.ndarray] = [np.empty((0, self.num_perm), self.dtype)]
        batch: list[list[str]] = []
        size = 0
        for code in codes:
            batch.append(code_tokens(code, self.language))
            size += len(batch[-1]) + 1
            if size >= self.batch_tokens:
                rows.append(self._batch(batch))
                batch, size = [], 0
        if batch:
            rows.append(self._batch(batch))
        return np.concatenate(rows)

    def lean(self, signature: np.ndarray) -> LeanMinHash:
        """A datasketch `LeanMinHash` holding `signature` (for `MinHashLSH`, `jaccard`)."""
        return LeanMinHash(seed=self.seed, hashvalues=signature, scheme=self.scheme)


class NearDuplicateIndex:
    """Code seen so far, in a `datasketch.MinHashLSH` (`lsh`) with its signatures; `query`
    returns the keys whose estimated Jaccard similarity to the code is >= `threshold`.

    Band keys are computed once per signature and shared by query and insert; they are the
    bytes `MinHashLSH.insert` would compute, so `lsh.query(LeanMinHash)` works on it too."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, seed: int = 1,
                 ngram: int = 5, scheme: Scheme = "affine32", language: str | None = None,
                 weights: tuple[float, float] = LSH_WEIGHTS) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.hasher = MinHasher(num_perm, seed, ngram, scheme, language)
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
        self._keys: list[Hashable] = []
        self._ids: dict[Hashable, int] = {}
        self._sigs = np.empty((1024, num_perm), self.hasher.dtype)

    def __len__(self) -> int:
        return len(self._keys)

    def _signature(self, code: str | None, signature: np.ndarray | None) -> np.ndarray:
        if signature is not None:
            return signature
        if code is None:
            raise TypeError("pass the code or its signature")
        return self.hasher.signature(code)

    def _bands(self, sig: np.ndarray) -> list[bytes]:
        raw, width = sig.byteswap().tobytes(), sig.itemsize  # MinHashLSH._byteswap per band
        return [raw[lo * width:hi * width] for lo, hi in self.lsh.hashranges]

    def _candidates(self, bands: list[bytes]) -> list[int]:
        found: set[int] = set()
        for band, table in zip(bands, self.lsh.hashtables, strict=True):
            found.update(table.get(band))
        return sorted(found)

    def _matches(self, sig: np.ndarray, bands: list[bytes]) -> list[tuple[int, float]]:
        ids = self._candidates(bands)
        if not ids:
            return []
        scores = (self._sigs[ids] == sig).mean(axis=1)
        return sorted(((i, float(s)) for i, s in zip(ids, scores, strict=True)
                       if s >= self.threshold), key=lambda m: (-m[1], m[0]))

    def _insert(self, key: Hashable, sig: np.ndarray, bands: list[bytes]) -> None:
        if key in self._ids:
            raise ValueError(f"key {key!r} is already in the index")
        i = self._ids[key] = len(self._keys)
        if i == len(self._sigs):
            self._sigs = np.concatenate([self._sigs, np.empty_like(self._sigs)])
        self._sigs[i] = sig
        self._keys.append(key)
        self.lsh.keys.insert(i, *bands)
        for band, table in zip(bands, self.lsh.hashtables, strict=True):
            table.insert(band, i)

    def add(self, key: Hashable, code: str | None = None, *,
            signature: np.ndarray | None = None) -> None:
        """Index `code` (or its precomputed `signature`) under `key`, which must be new.
        In `lsh` the item's key is its insertion number."""
        sig = self._signature(code, signature)
        self._insert(key, sig, self._bands(sig))

    def candidates(self, code: str | None = None, *,
                   signature: np.ndarray | None = None) -> list[Hashable]:
        """The LSH candidates, unchecked, in insertion order."""
        sig = self._signature(code, signature)
        return [self._keys[i] for i in self._candidates(self._bands(sig))]

    def matches(self, code: str | None = None, *,
                signature: np.ndarray | None = None) -> list[tuple[Hashable, float]]:
        """(key, estimated Jaccard) of the candidates at or over the threshold, most similar
        first (ties: earliest added)."""
        sig = self._signature(code, signature)
        return [(self._keys[i], s) for i, s in self._matches(sig, self._bands(sig))]

    def query(self, code: str | None = None, *,
              signature: np.ndarray | None = None) -> list[Hashable]:
        """Keys of the near-duplicates of `code`: checked candidates, as `matches`."""
        return [key for key, _ in self.matches(code, signature=signature)]


def find_near_duplicates(items: Iterable[tuple[str, str]], threshold: float = 0.8,
                         batch: int = 512, **index_args: object) -> dict[str, str]:
    """Walk (key, code) pairs in order; map each key whose code near-duplicates an earlier
    kept item to that item's key (the most similar; ties: the earliest). The first of each
    group is kept and is not in the result. `index_args` go to `NearDuplicateIndex`."""
    index = NearDuplicateIndex(threshold, **index_args)  # type: ignore[arg-type]
    found: dict[str, str] = {}
    it = iter(items)
    while chunk := list(islice(it, batch)):
        sigs = index.hasher.signatures(code for _, code in chunk)
        for (key, _), sig in zip(chunk, sigs, strict=True):
            if key in found or key in index._ids:
                raise ValueError(f"key {key!r} is already in the index")
            bands = index._bands(sig)
            best = index._matches(sig, bands)
            if best:
                found[key] = index._keys[best[0][0]]  # type: ignore[assignment]
            else:
                index._insert(key, sig, bands)
    return found
