"""ROUGE-L novelty filter for Self-Instruct: `NoveltyIndex`.

A new instruction is novel when its ROUGE-L F-measure against every instruction in the
pool is below a threshold (0.7 in Self-Instruct). Scores match `rouge-score`'s
`RougeScorer(["rougeL"])` exactly (same tokenizer: lowercase, runs of [a-z0-9], no
stemming; same float formula), but a check does not score the whole pool:

- F = 2·LCS / (la + lb), and LCS <= the multiset token overlap <= min(la, lb). So a pool
  item can only reach threshold t if its length is within [α·la, la/α] (α = t / (2 - t))
  and it shares at least ceil(α·max(la, lb)) tokens with the candidate.
- Prefix filtering (AllPairs / PPJoin): under one global token order, two token sets that
  share k elements have intersecting prefixes of length `len - k + 1`. Each pool item is
  indexed only under its prefix (its rarest ~1-α of tokens), in postings split by item
  length, and a candidate probes, for each admissible length, only the prefix that
  length requires, so frequent words ("write", "function", "the") are seldom looked up.
  Repeated words count as distinct elements ("the#1", "the#2"), which makes set overlap
  equal multiset overlap.
- The order is "rarest first" by document frequency, recomputed (and the index rebuilt)
  each time the pool doubles; tokens first seen after a rebuild rank as rarest of all,
  which keeps the order consistent with every prefix already indexed.
- The postings found are filtered as numpy arrays, not item by item in Python: the
  positional bound (PPJoin) from the first and last shared prefix element, then the exact
  multiset overlap. The few survivors get an exact bit-parallel LCS (Hyyrö 2004) on
  Python integers and are scored with rouge-score's own formula.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Callable, Iterable

import numpy as np

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
#: Slack for the float rounding in rouge-score's F formula: bounds prune only when the
#: exact rational bound is this far below the threshold.
_EPS = 1e-9


def rouge_tokenize(text: str) -> list[str]:
    """Tokenize like rouge-score's default tokenizer (no stemming)."""
    return [t for t in _NON_ALNUM.sub(" ", text.lower()).split() if t]


def rouge_l_from_lcs(lcs: int, len_a: int, len_b: int) -> float:
    """ROUGE-L F-measure from an LCS length, with rouge-score's exact arithmetic."""
    if lcs == 0 or len_a == 0 or len_b == 0:
        return 0.0
    precision = lcs / len_b
    recall = lcs / len_a
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common subsequence of two token-id lists (bit-parallel)."""
    if len(a) < len(b):
        a, b = b, a
    masks: dict[int, int] = {}
    for i, tok in enumerate(b):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return _lcs_with_masks(masks, len(b), a)


def _lcs_with_masks(masks: dict[int, int], m: int, other: Iterable[int]) -> int:
    full = (1 << m) - 1
    v = full
    for tok in other:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return m - v.bit_count()


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F-measure between two texts, as rouge-score computes it (symmetric)."""
    vocab: dict[str, int] = {}
    ta = [vocab.setdefault(t, len(vocab)) for t in rouge_tokenize(a)]
    tb = [vocab.setdefault(t, len(vocab)) for t in rouge_tokenize(b)]
    return rouge_l_from_lcs(lcs_length(ta, tb) if ta and tb else 0, len(ta), len(tb))


class NoveltyIndex:
    """A growing pool of texts with an indexed ROUGE-L near-duplicate check.

    `add_if_novel(text)` keeps `text` only if its ROUGE-L F against every pool item is
    below `threshold`; decisions equal brute force with rouge-score. Pool items are
    numbered 0, 1, ... in the order they were added. `tokenize` replaces the rouge-score
    tokenizer (e.g. one with stemming); scores then match a scorer using the same one.
    Not thread-safe: one index per process, fed in a deterministic order.
    """

    def __init__(self, threshold: float,
                 tokenize: Callable[[str], list[str]] = rouge_tokenize) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        self.threshold = threshold
        self.tokenize = tokenize
        self._alpha = threshold / (2.0 - threshold)
        self._vocab: dict[str, int] = {}
        self._elem_ids: dict[tuple[int, int], int] = {}
        self._rank: list[int] = []  # element id -> order; larger = rarer = earlier in prefix
        self._next_rank = 0
        self._tokens: list[list[int]] = []  # pool item -> token ids
        self._flat = array("q")  # every pool item's element ids, one after another
        self._offsets = array("q")  # pool item -> where its elements start in _flat
        # element id -> item length -> [item << 16 | position of the element in the
        # item's order], for the elements in each item's prefix only.
        self._postings: dict[int, dict[int, array]] = {}
        self._rebuild_at = 64

    def __len__(self) -> int:
        return len(self._tokens)

    def _encode(self, text: str, grow: bool) -> tuple[list[int], list[int]]:
        """Token ids and element ids of `text`; unknown words get -1 unless `grow`."""
        toks: list[int] = []
        elems: list[int] = []
        seen: dict[int, int] = {}
        for word in self.tokenize(text):
            tok = self._vocab.get(word, -1)
            if tok < 0 and grow:
                tok = self._vocab[word] = len(self._vocab)
            toks.append(tok)
            if tok < 0:
                continue
            occ = seen[tok] = seen.get(tok, 0) + 1
            elem = self._elem_ids.get((tok, occ), -1)
            if elem < 0 and grow:
                elem = self._elem_ids[(tok, occ)] = len(self._rank)
                self._rank.append(self._next_rank)
                self._next_rank += 1
            if elem >= 0:
                elems.append(elem)
        return toks, elems

    def _ordered(self, elems: Iterable[int]) -> list[int]:
        return sorted(elems, key=self._rank.__getitem__, reverse=True)

    def _index(self, item: int) -> None:
        n = len(self._tokens[item])
        # The least overlap this item can need with any partner is reached with the
        # shortest partner allowed, alpha * n.
        prefix = n - max(1, math.ceil(self._alpha * n - _EPS)) + 1
        start = self._offsets[item]
        for pos, elem in enumerate(self._ordered(self._flat[start:start + n])[:prefix]):
            by_len = self._postings.get(elem)
            if by_len is None:
                by_len = self._postings[elem] = {}
            plist = by_len.get(n)
            if plist is None:
                plist = by_len[n] = array("q")
            plist.append(item << 16 | min(pos, 0xFFFF))

    def _candidates(self, elems: list[int], la: int) -> list[int]:
        """Pool items that the prefix, length, positional and overlap filters keep.

        Python only walks this text's prefix; the postings it finds are filtered as
        numpy arrays: per pool item, the first and last match bound the overlap, then
        the exact multiset overlap comes from the flat element store.
        """
        t = self.threshold
        hi = int(la / self._alpha + _EPS)
        need = [0] * (hi + 1)  # shared tokens an item of length lb needs; 0: unreachable
        for lb in range(1, hi + 1):
            k = max(1, math.ceil(t * (la + lb) / 2 - _EPS))
            if k <= min(la, lb):
                need[lb] = k
        lengths = [lb for lb in range(hi + 1) if need[lb]]  # need rises with lb
        if not lengths:
            return []
        found = array("q")  # the postings met, concatenated
        sizes: list[int] = []
        part_i: list[int] = []
        part_lb: list[int] = []
        # Words unknown to the pool rank rarest of all: they take the first positions of
        # this text's order but have no postings.
        for i, elem in enumerate(self._ordered(elems), la - len(elems)):
            room = la - i  # an item of length lb is probed here if need[lb] <= room
            if room < need[lengths[0]]:
                break  # past the prefix for every length
            by_len = self._postings.get(elem)
            if by_len is None:
                continue
            if len(by_len) < 8:  # rare elements: few lengths to look at
                probes = [(lb, p) for lb, p in by_len.items() if lb <= hi and 0 < need[lb] <= room]
            else:
                probes = [(lb, by_len.get(lb)) for lb in lengths if need[lb] <= room]
            for lb, plist in probes:
                if plist:
                    found.extend(plist)
                    sizes.append(len(plist))
                    part_i.append(i)
                    part_lb.append(lb)
        if not found:
            return []
        packed = np.frombuffer(found, dtype=np.int64)
        items, j_y = packed >> 16, packed & 0xFFFF
        i_x = np.repeat(np.array(part_i, dtype=np.int64), sizes)
        lb = np.repeat(np.array(part_lb, dtype=np.int64), sizes)
        order = np.argsort(items, kind="stable")  # keeps each item's matches in i order
        items, i_x, j_y, lb = items[order], i_x[order], j_y[order], lb[order]
        starts = np.flatnonzero(np.r_[True, items[1:] != items[:-1]])
        ends = np.r_[starts[1:], len(items)] - 1
        k = np.array(need, dtype=np.int64)[lb[starts]]
        # The first match is the first shared element: nothing before it is shared. After
        # the last match, at most what remains of the shorter side.
        first_ok = np.minimum(la - i_x[starts], lb[starts] - j_y[starts]) >= k
        bound = ends - starts + np.minimum(la - i_x[ends], lb[ends] - j_y[ends])
        keep = first_ok & (bound >= k)
        cands, cand_len, k = items[starts[keep]], lb[starts[keep]], k[keep]
        if not len(cands):
            return []
        # Exact multiset overlap of every survivor, from the flat element store.
        seg = np.repeat(np.arange(len(cands)), cand_len)
        offsets = np.frombuffer(self._offsets, dtype=np.int64)[cands]
        pos = np.arange(len(seg)) + np.repeat(offsets - (np.cumsum(cand_len) - cand_len),
                                              cand_len)
        mine = np.zeros(len(self._rank), dtype=bool)
        mine[elems] = True
        hits = mine[np.frombuffer(self._flat, dtype=np.int64)[pos]]
        overlap = np.bincount(seg, weights=hits, minlength=len(cands))
        return cands[overlap >= k].tolist()

    def max_similarity(self, text: str) -> tuple[float, int | None]:
        """Best ROUGE-L F of `text` against the pool, and the pool item that has it.

        Exact whenever the best score reaches the threshold. Below it, pool items that
        the filters prove cannot reach the threshold are not scored, so the result is the
        best score among the rest (a lower bound, below the threshold; (0.0, None) when
        no item needed scoring).
        """
        toks, elems = self._encode(text, grow=False)
        la = len(toks)
        if la == 0 or not self._tokens:
            return 0.0, None
        masks: dict[int, int] = {}
        for i, tok in enumerate(toks):
            masks[tok] = masks.get(tok, 0) | (1 << i)
        best, best_item = 0.0, None
        for item in self._candidates(elems, la):  # in pool order: ties go to the first
            other = self._tokens[item]
            score = rouge_l_from_lcs(_lcs_with_masks(masks, la, other), la, len(other))
            if score > best:
                best, best_item = score, item
        return best, best_item

    def is_novel(self, text: str) -> bool:
        """True if `text` scores below the threshold against every pool item."""
        return self.max_similarity(text)[0] < self.threshold

    def add(self, text: str) -> int:
        """Add `text` to the pool unconditionally; returns its pool number."""
        toks, elems = self._encode(text, grow=True)
        item = len(self._tokens)
        self._tokens.append(toks)
        self._offsets.append(len(self._flat))
        self._flat.extend(elems)
        if toks:
            self._index(item)
        if len(self._tokens) >= self._rebuild_at:
            self._rebuild()
        return item

    def add_if_novel(self, text: str) -> bool:
        """Add `text` if it is novel; returns whether it was added."""
        if not self.is_novel(text):
            return False
        self.add(text)
        return True

    def _rebuild(self) -> None:
        """Re-rank elements rarest-first by document frequency and re-index prefixes."""
        df = np.bincount(np.frombuffer(self._flat, dtype=np.int64),
                         minlength=len(self._rank)).tolist()
        order = sorted(range(len(df)), key=lambda e: (-df[e], e))
        for rank, e in enumerate(order):
            self._rank[e] = rank
        self._next_rank = len(order)
        self._postings = {}
        for item, toks in enumerate(self._tokens):
            if toks:
                self._index(item)
        self._rebuild_at = 2 * len(self._tokens)
