"""NoveltyIndex: exact agreement with rouge-score, and indexed == brute-force decisions."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pipeline.novelty import NoveltyIndex, lcs_length, rouge_l, rouge_tokenize

rouge_scorer = pytest.importorskip(
    "rouge_score.rouge_scorer", reason="the reference scorer: pip install rouge-score")
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
SEEDS = Path(__file__).resolve().parent.parent / "data" / "seed_tasks.jsonl"


def reference(a: str, b: str) -> float:
    return SCORER.score(a, b)["rougeL"].fmeasure


#: (seed-style task, a rewording an LLM would produce): each pair scores >= 0.7.
NEAR_DUPLICATES = [
    ("Write a function that returns the sum of the digits of a positive integer.",
     "Write a function that returns the sum of digits of a given positive integer."),
    ("Implement a function to check whether a string is a palindrome, ignoring case.",
     "Implement a Python function to check if a string is a palindrome ignoring case."),
    ("Given a list of integers, return the second largest distinct value or None.",
     "Given a list of integers, return the second-largest distinct value, or None."),
    ("Write a program that counts the vowels in a sentence.",
     "Write a program which counts the vowels in a sentence"),
    ("Create a class Stack with push, pop and peek methods that raise IndexError when empty.",
     "Create a Stack class with push, pop and peek methods raising IndexError when empty."),
    ("Sort a list of words by length, breaking ties alphabetically.",
     "SORT a list of words by their length, breaking ties alphabetically!"),
]
#: Same topic, different task: each pair scores < 0.7.
DISTINCT = [
    ("Write a function that returns the sum of the digits of a positive integer.",
     "Return the product of the odd digits of an integer, or -1 when it has none."),
    ("Implement a function to check whether a string is a palindrome, ignoring case.",
     "Find the longest palindromic substring of a string in quadratic time."),
    ("Count the islands in a grid of 0s and 1s.",
     "Count the lakes enclosed by land in a grid, where water touching the border drains."),
]


def _perturb(rng: random.Random, text: str, vocab: list[str]) -> str:
    words = text.split()
    for _ in range(rng.randint(0, 4)):
        op = rng.random()
        if op < 0.3 and len(words) > 1:
            del words[rng.randrange(len(words))]
        elif op < 0.6:
            words.insert(rng.randint(0, len(words)), rng.choice(vocab))
        elif op < 0.8 and words:
            words[rng.randrange(len(words))] = rng.choice(vocab)
        elif len(words) > 1:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def _instructions(n: int, seed: int) -> list[str]:
    """Seed-task instructions, random word salads and rewordings of both."""
    rng = random.Random(seed)
    base = [json.loads(line)["instruction"] for line in SEEDS.read_text().splitlines()]
    vocab = sorted({w for t in base for w in t.split()}) + ["the", "a", "of", "THE", "x-1"]
    out: list[str] = []
    while len(out) < n:
        r = rng.random()
        if r < 0.3:
            out.append(rng.choice(base))
        elif r < 0.45:
            out.append(" ".join(rng.choices(vocab, k=rng.randint(0, 12))))
        else:
            out.append(_perturb(rng, rng.choice(out or base), vocab))
    return out


def test_tokenizer_matches_rouge_score() -> None:
    from rouge_score import tokenize

    for text in ["Hello, World! x_1 = 2.5e-3", "  ", "İstanbul café naïve ÀB", "a\tb\nc",
                 "don't re-use snake_case or CamelCase42", "ÅngstrÖm 10%"]:
        assert rouge_tokenize(text) == tokenize.tokenize(text, None)


def test_rouge_l_equals_rouge_score_on_random_pairs() -> None:
    texts = _instructions(200, seed=1)
    rng = random.Random(2)
    for _ in range(3000):
        a, b = rng.choice(texts), rng.choice(texts)
        assert rouge_l(a, b) == reference(a, b), (a, b)


def test_bit_parallel_lcs_on_long_sequences() -> None:
    rng = random.Random(3)
    for _ in range(50):
        a = [rng.randrange(5) for _ in range(rng.randint(0, 150))]
        b = [rng.randrange(5) for _ in range(rng.randint(0, 150))]
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a, 1):
            for j, y in enumerate(b, 1):
                table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(
                    table[i - 1][j], table[i][j - 1])
        assert lcs_length(a, b) == table[-1][-1]


@pytest.mark.parametrize(("original", "reworded"), NEAR_DUPLICATES)
def test_near_duplicates_are_rejected(original: str, reworded: str) -> None:
    assert reference(original, reworded) >= 0.7
    index = NoveltyIndex(0.7)
    for other in DISTINCT:
        index.add(other[1])
    item = index.add(original)
    assert not index.is_novel(reworded)
    assert index.max_similarity(reworded) == (reference(original, reworded), item)
    assert index.add_if_novel(reworded) is False
    assert len(index) == len(DISTINCT) + 1


@pytest.mark.parametrize(("a", "b"), DISTINCT)
def test_distinct_tasks_are_kept(a: str, b: str) -> None:
    assert reference(a, b) < 0.7
    index = NoveltyIndex(0.7)
    index.add(a)
    assert index.add_if_novel(b) is True


@pytest.mark.parametrize("threshold", [0.7, 0.5, 1.0])
def test_indexed_decisions_equal_brute_force(threshold: float) -> None:
    # rouge-score itself at the default threshold; elsewhere our pairwise rouge_l (equal to
    # it, see above), which is several times faster.
    score = reference if threshold == 0.7 else rouge_l
    index = NoveltyIndex(threshold)
    pool: list[str] = []
    for text in _instructions(300, seed=int(threshold * 100)):
        scores = [score(p, text) for p in pool]
        best = max(scores, default=0.0)
        got, item = index.max_similarity(text)
        assert (got >= threshold) == (best >= threshold), text
        if best >= threshold:
            assert got == best and scores[item] == best
        else:
            assert got < threshold
        assert index.add_if_novel(text) is (best < threshold)
        if best < threshold:
            pool.append(text)
    assert len(index) == len(pool) > 64  # past the first re-ranking of the index


def test_empty_and_unknown_words() -> None:
    index = NoveltyIndex(0.7)
    assert index.max_similarity("anything") == (0.0, None)
    assert index.add("") == 0
    assert index.add_if_novel("!!!") is True  # no tokens: similar to nothing
    assert index.add("sort the list") == 2
    assert index.max_similarity("zzz qqq") == (0.0, None)
    assert index.max_similarity("Sort the list!")[1] == 2
    assert index.is_novel("sort the list quickly please now") is True


def test_threshold_is_validated() -> None:
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\], got 0"):
        NoveltyIndex(0)
    with pytest.raises(ValueError, match="got 1.5"):
        NoveltyIndex(1.5)
