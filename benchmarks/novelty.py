"""ROUGE-L novelty filtering at scale: `NoveltyIndex` against brute force.

20k synthetic coding instructions (templates over a varied vocabulary, with about a
quarter reworded copies of earlier ones, as an LLM produces in Self-Instruct rounds) are
offered one by one to `add_if_novel` on a growing pool. Reports instructions/s at 5k, 10k
and 20k (cumulative and per segment), how many were kept, and how time grows from 5k to
20k (linear: 4x, quadratic: 16x). For comparison, the first --brute-n instructions go
through brute force twice: rouge-score's scorer against every pool item (what the
Self-Instruct reference code does) and the same with our bit-parallel LCS; both must make
the same decisions as the index.

    python benchmarks/novelty.py [-n 20000] [--brute-n 2000] [--threshold 0.7]
"""

from __future__ import annotations

import argparse
import importlib
import math
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.novelty import (  # noqa: E402
    NoveltyIndex,
    _lcs_with_masks,
    rouge_l_from_lcs,
    rouge_tokenize,
)

OPENERS = ["Write a function", "Write a Python function", "Implement a function",
           "Create a function", "Define a function", "Write a program", "Implement a method",
           "Write a helper", "Code a routine", "Write a small utility",
           "Write a generator function", "Design a class with a method"]
VERBS = ["returns", "computes", "counts", "finds", "removes", "sorts", "reverses", "merges",
         "groups", "validates", "extracts", "converts", "encodes", "decodes", "compresses",
         "normalizes", "filters", "partitions", "rotates", "flattens", "deduplicates",
         "ranks", "summarizes", "checks", "locates", "lists", "replaces", "splits",
         "interleaves", "aggregates", "estimates", "simulates", "scores", "schedules"]
OBJECTS = ["the longest increasing subsequence", "all prime factors", "the number of vowels",
           "the median value", "duplicate entries", "the shortest path", "matching brackets",
           "a checksum digit", "the nth Fibonacci number", "overlapping intervals",
           "anagram groups", "the most frequent element", "the second largest value",
           "every palindromic substring", "the running total", "the greatest common divisor",
           "the edit distance", "balanced partitions", "consecutive runs",
           "the k closest points", "leap years", "the weekday of each date",
           "IPv4 addresses", "hexadecimal colour codes", "the set bits", "Roman numerals",
           "the transpose", "the area of each polygon", "a topological order",
           "connected components", "missing numbers", "the majority vote",
           "a sliding window maximum", "the longest common prefix", "camelCase identifiers",
           "the moving average", "word frequencies", "the digital root", "perfect squares",
           "a spiral ordering", "the peak element", "the minimum spanning tree cost",
           "valid email addresses", "the checksum of each row", "the inversion count",
           "the day difference between two dates", "a run-length encoding",
           "the maximum subarray sum", "the Collatz sequence length", "all permutations"]
INPUTS = ["in a list of integers", "of a string", "in a binary tree", "from a CSV line",
          "in a dictionary of scores", "in a 2D grid", "in a linked list",
          "of a date string", "in a directed graph given as an adjacency list",
          "in a sorted array", "from a log file line", "in a matrix of floats",
          "in a list of words", "of a positive integer", "in a stream of readings",
          "from a JSON-like nested dict", "in a list of (start, end) tuples",
          "of a sentence", "in a bit string", "in a list of 2D points"]
CONTEXT_VERBS = ["stores", "tracks", "logs", "sends", "holds", "reads", "exports", "parses",
                 "receives", "keeps", "caches", "merges"]
DOMAINS = ["A warehouse tracks its inventory.", "A school stores student grades.",
           "A bank records daily transactions.", "A weather station logs temperatures.",
           "A game keeps a leaderboard.", "A lab sequences DNA strings.",
           "A web server writes access logs.", "A library catalogues books by ISBN.",
           "A delivery company plans routes.", "A chess club records matches.",
           "A shop applies discount codes.", "A sensor network reports readings."]
CONSTRAINTS = ["without using any imports.", "in linear time.",
               "and return -1 if there is none.", "ignoring case and punctuation.",
               "using recursion.", "using dynamic programming.",
               "handling negative numbers correctly.", "The input may be empty.",
               "Raise ValueError on invalid input.", "keeping the original order.",
               "with O(1) extra space.", "and return the result as a sorted list."]
STDLIB_MODULES = ["string", "collections", "itertools", "functools", "json", "csv", "datetime",
                  "re", "heapq", "bisect", "statistics", "textwrap", "fractions", "decimal",
                  "pathlib", "calendar", "difflib", "random", "shutil", "zipfile", "email",
                  "urllib.parse", "http.client", "sqlite3", "logging", "argparse", "socket",
                  "threading", "subprocess", "tarfile", "gzip", "html", "xml.dom.minidom",
                  "configparser", "uuid", "ipaddress", "hashlib", "locale", "gettext", "time"]
SYNONYMS = {"function": "method", "returns": "gives back", "list": "array",
            "write": "please write", "computes": "calculates", "finds": "looks up",
            "string": "text", "integers": "ints", "all": "every", "the": "each",
            "value": "number", "dictionary": "mapping", "input": "argument"}


def stdlib_vocabulary() -> tuple[list[str], list[int]]:
    """Words of the docstrings of some stdlib modules and their counts: a Zipf-shaped
    technical vocabulary, so rare words keep appearing as the set grows (Heaps' law)."""
    counts: Counter[str] = Counter()
    for name in STDLIB_MODULES:
        mod = importlib.import_module(name)
        for obj in [mod, *vars(mod).values()]:
            doc = getattr(obj, "__doc__", None) if not isinstance(obj, str) else None
            if isinstance(doc, str):
                counts.update(w for w in re.findall(r"[a-z]{3,}", doc.lower()))
    words = sorted(counts, key=lambda w: (-counts[w], w))
    return words, [counts[w] for w in words]


def _fresh(rng: random.Random, vocab: tuple[list[str], list[int]]) -> str:
    def words(k: int) -> list[str]:
        return rng.choices(vocab[0], weights=vocab[1], k=k)

    name = f"`{'_'.join(words(2))}`"
    context = (f"{rng.choice(['A', 'The', 'Our', 'Each'])} {' '.join(words(2))} "
               f"{rng.choice(CONTEXT_VERBS)} {' '.join(words(rng.randint(1, 3)))}.")
    r = rng.random()
    parts = [context if r < 0.4 else rng.choice(DOMAINS) if r < 0.55 else "",
             rng.choice(OPENERS), name if rng.random() < 0.4 else "", "that",
             rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(INPUTS),
             f"of {' '.join(words(rng.randint(1, 2)))}" if rng.random() < 0.5 else "",
             rng.choice(CONSTRAINTS) if rng.random() < 0.5 else ""]
    if rng.random() < 0.3:
        args = ", ".join(str(rng.randint(-9, 99)) for _ in range(rng.randint(2, 5)))
        parts.append(f"For example, f([{args}]) should return {rng.randint(0, 500)}.")
    return " ".join(p for p in parts if p)


def _reword(rng: random.Random, text: str) -> str:
    words = text.split()
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(words))
        op = rng.random()
        if op < 0.5 and words[i].lower() in SYNONYMS:
            words[i] = SYNONYMS[words[i].lower()]
        elif op < 0.75 and len(words) > 4:
            del words[i]
        else:
            words.insert(i, rng.choice(["simple", "efficient", "please", "also", "new"]))
    return " ".join(words)


def make_instructions(n: int, seed: int = 0, dup_share: float = 0.25) -> list[str]:
    """n instructions; about `dup_share` of them are rewordings of earlier ones."""
    rng = random.Random(seed)
    vocab = stdlib_vocabulary()
    out: list[str] = []
    for _ in range(n):
        out.append(_reword(rng, rng.choice(out)) if out and rng.random() < dup_share
                   else _fresh(rng, vocab))
    return out


def run_index(texts: list[str], threshold: float,
              marks: list[int]) -> tuple[list[bool], dict[int, tuple[float, float]]]:
    """add_if_novel over `texts`; decisions, and (CPU s, wall s) so far at each mark."""
    idx = NoveltyIndex(threshold)
    kept: list[bool] = []
    at: dict[int, tuple[float, float]] = {}
    c0, w0 = time.process_time(), time.perf_counter()
    for i, text in enumerate(texts, 1):
        kept.append(idx.add_if_novel(text))
        if i in marks:
            at[i] = (time.process_time() - c0, time.perf_counter() - w0)
    return kept, at


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """fn(), CPU seconds, wall seconds."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def brute_rouge_score(texts: list[str], threshold: float) -> list[bool]:
    """Self-Instruct's way: rouge-score against every pool item."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool: list[str] = []
    kept: list[bool] = []
    for text in texts:
        ok = all(scorer.score(p, text)["rougeL"].fmeasure < threshold for p in pool)
        kept.append(ok)
        if ok:
            pool.append(text)
    return kept


def brute_fast_lcs(texts: list[str], threshold: float) -> list[bool]:
    """Every pool item scored, but with pre-tokenized ids and bit-parallel LCS."""
    vocab: dict[str, int] = {}
    pool: list[list[int]] = []
    kept: list[bool] = []
    for text in texts:
        toks = [vocab.setdefault(w, len(vocab)) for w in rouge_tokenize(text)]
        masks: dict[int, int] = {}
        for i, tok in enumerate(toks):
            masks[tok] = masks.get(tok, 0) | (1 << i)
        ok = not toks or all(
            rouge_l_from_lcs(_lcs_with_masks(masks, len(toks), p), len(toks), len(p))
            < threshold for p in pool)
        kept.append(ok)
        if ok:
            pool.append(toks)
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--brute-n", type=int, default=2000,
                    help="instructions for the brute-force comparison")
    ap.add_argument("--ref-n", type=int, default=500,
                    help="of those, how many also go through rouge-score's own scorer "
                    "(about 0.2 ms a pair)")
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    texts = make_instructions(args.n, args.seed)
    lens = [len(rouge_tokenize(t)) for t in texts]
    print(f"{args.n} instructions, {sum(lens) / len(lens):.1f} tokens on average "
          f"(min {min(lens)}, max {max(lens)}), threshold {args.threshold}")
    marks = sorted({m for m in (args.n // 4, args.n // 2, args.n) if m})
    kept, at = run_index(texts, args.threshold, marks)
    print("\nNoveltyIndex, add_if_novel one by one on a growing pool (rates from CPU time, "
          "which a shared machine disturbs less than wall time):")
    print(f"{'offered':>8} {'kept':>7} {'CPU s':>7} {'wall s':>7} {'instr/s cumul.':>15} "
          f"{'instr/s segment':>16}")
    prev_n, prev_t = 0, 0.0
    for m in marks:
        cpu, wall = at[m]
        seg = (m - prev_n) / max(cpu - prev_t, 1e-9)
        print(f"{m:>8} {sum(kept[:m]):>7} {cpu:>7.2f} {wall:>7.2f} {m / cpu:>15.0f} "
              f"{seg:>16.0f}")
        prev_n, prev_t = m, cpu
    if len(marks) == 3:
        ratio = at[marks[2]][0] / at[marks[0]][0]
        growth = marks[2] / marks[0]
        print(f"time({marks[2]}) / time({marks[0]}) = {ratio:.2f}  (linear {growth:.0f}x, "
              f"quadratic {growth ** 2:.0f}x; exponent {math.log(ratio, growth):.2f})")

    bn = min(args.brute_n, args.n)
    if bn:
        print(f"\nBrute force on the first {bn} (pool grows to "
              f"{sum(kept[:bn])} items):")
        head = texts[:bn]
        index_kept, c_index, w_index = timed(lambda: run_index(head, args.threshold, [])[0])
        fast, c_fast, w_fast = timed(lambda: brute_fast_lcs(head, args.threshold))
        rn = min(args.ref_n, bn)
        ref, c_ref, w_ref = timed(lambda: brute_rouge_score(head[:rn], args.threshold))
        for name, n, cpu, wall in (
                ("NoveltyIndex", bn, c_index, w_index),
                ("brute force, bit-parallel LCS", bn, c_fast, w_fast),
                (f"brute force, rouge-score (first {rn})", rn, c_ref, w_ref)):
            print(f"  {name:<36} {cpu:>8.2f} CPU s {wall:>8.2f} wall s "
                  f"{n / max(cpu, 1e-9):>9.0f} instr/s")
        same = index_kept == fast and fast[:rn] == ref
        print(f"  decisions identical: {same}")
        if not same:
            sys.exit("decisions differ from brute force")


if __name__ == "__main__":
    main()
