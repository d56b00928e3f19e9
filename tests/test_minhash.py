"""MinHash near-duplicate detection of code (`pipeline.minhash`): normalised tokens against
`tokenize` on every MBPP solution, signatures against datasketch and a direct computation,
renamed copies found and different code not, JavaScript, empty code, determinism across
processes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tokenize
from pathlib import Path

import numpy as np
import pytest
import xxhash
from datasketch import LeanMinHash, MinHash, MinHashLSH

from pipeline.minhash import (
    _PY_KEEP,
    MinHasher,
    NearDuplicateIndex,
    code_tokens,
    find_near_duplicates,
)

MBPP = Path("/work/shared/data/mbpp-full.jsonl")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mbpp() -> dict[int, str]:
    if not MBPP.exists():
        pytest.skip(f"{MBPP} not found (the MBPP reference solutions)")
    rows = [json.loads(line) for line in MBPP.read_text().splitlines()]
    return {r["task_id"]: r["code"] for r in rows}


#: MBPP task 1's solution (min_cost), renamed, re-indented, re-wrapped and commented.
RENAMED_MIN_COST = '''\
ROWS = 3
COLS = 3


def cheapest_path(grid, last_row, last_col):
    # table of best costs so far
    best = [[0 for _ in range(COLS)]
            for _ in range(ROWS)]
    best[0][0] = grid[0][0]
    for r in range(1, last_row + 1):
        best[r][0] = best[r - 1][0] + grid[r][0]
    for c in range(1, last_col + 1):
        best[0][c] = best[0][c - 1] + grid[0][c]
    for r in range(1, last_row + 1):
        for c in range(1, last_col + 1):
            best[r][c] = min(best[r - 1][c - 1],
                             best[r - 1][c],
                             best[r][c - 1]) + grid[r][c]
    return best[last_row][last_col]
'''
#: The same names as min_cost (cost, m, n, tc, i, j, R, C), different code.
SAME_VOCABULARY = '''\
R = 3
C = 3
def min_cost(cost, m, n):
\ttc = [0 for x in range(C)]
\tfor i in range(R):
\t\tfor j in range(C):
\t\t\tif cost[i][j] < tc[j] or i == 0:
\t\t\t\ttc[j] = cost[i][j]
\treturn sum(tc[:n]) + m
'''
JS_ADD = """\
// Sum of the squares of the even numbers.
function sumEvenSquares(values) {
  /* skip odd ones */
  let total = 0;
  for (const v of values) {
    if (v % 2 === 0) { total += v * v; }
  }
  console.log(`total: ${total}`);
  return total;
}
"""
JS_RENAMED = """\
function evenSq(xs){
    let acc = 0;   // running sum
    for (const x of xs) {
        if (x % 2 === 0) { acc += x * x; }
    }
    console.log(`sum=${acc}`);
    return acc;
}
"""
JS_OTHER = """\
const byKey = (rows, key) => rows.reduce((acc, row) => {
  (acc[row[key]] = acc[row[key]] || []).push(row);
  return acc;
}, {});
"""


def estimate(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def tokenize_oracle(code: str) -> list[str]:
    """The normalisation done with the `tokenize` module (whitespace error tokens, such as a
    lone trailing carriage return, dropped)."""
    out = []
    for t in tokenize.generate_tokens(io.StringIO(code).readline):
        if t.type == tokenize.NAME:
            attribute = bool(out) and out[-1] == "."
            out.append(t.string if t.string in _PY_KEEP or attribute else "ID")
        elif t.type in (tokenize.NUMBER, tokenize.STRING):
            out.append("NUM" if t.type == tokenize.NUMBER else "STR")
        elif t.type == tokenize.OP or (t.type == tokenize.ERRORTOKEN and t.string.strip()):
            out.append(t.string)
    return out


def test_tokens_equal_tokenize_normalisation_on_every_mbpp_solution(mbpp: dict[int, str]) -> None:
    for task, code in mbpp.items():
        assert code_tokens(code) == tokenize_oracle(code), task
    tricky = ("x = rb'a' + f\"{y}\" + print'z'  # c\n", "s = '''a\n'b'''\\\n + 1if x else.5\n",
              "n = 0x_1F + 1_000.0e-3j ** 2 // 3\n", "def f(*a, **k) -> None: ...\n")
    for code in tricky:
        assert code_tokens(code) == tokenize_oracle(code), code


def test_renamed_reformatted_copy_has_the_same_tokens_and_is_found(mbpp: dict[int, str]) -> None:
    original = mbpp[1]
    assert code_tokens(RENAMED_MIN_COST) == code_tokens(original)
    hasher = MinHasher()
    assert estimate(hasher.signature(original), hasher.signature(RENAMED_MIN_COST)) == 1.0
    # an operator changed and a docstring added: no longer equal, still near-duplicates
    edited = RENAMED_MIN_COST.replace("best[r - 1][0] + grid", "best[r - 1][0] - grid").replace(
        "last_col):\n", 'last_col):\n    """Cheapest path from the top-left corner."""\n')
    assert len(code_tokens(edited)) == len(code_tokens(original)) + 1
    assert 0.8 <= estimate(hasher.signature(original), hasher.signature(edited)) < 1.0
    index = NearDuplicateIndex(0.8)
    for task in (1, 3, 11, 56, 160):
        index.add(f"mbpp/{task}", mbpp[task])
    assert index.query(RENAMED_MIN_COST) == ["mbpp/1"]
    assert index.query(edited) == ["mbpp/1"]
    key, score = index.matches(edited)[0]
    assert key == "mbpp/1" and 0.8 <= score < 1.0
    # the most similar comes first, even when it was added later
    loose = NearDuplicateIndex(0.6)
    loose.add("mbpp/1", original)
    loose.add("edited", edited)
    closer = edited.replace("best[0][c - 1] + grid", "best[0][c - 1] * grid")
    (first, s1), (second, s2) = loose.matches(closer)
    assert (first, second) == ("edited", "mbpp/1") and s1 > s2 >= 0.6
    assert find_near_duplicates([("a", original), ("b", SAME_VOCABULARY), ("c", edited),
                                 ("d", closer)], threshold=0.6) == {"c": "a", "d": "a"}


def test_different_function_with_the_same_vocabulary_is_not_found(mbpp: dict[int, str]) -> None:
    hasher = MinHasher()
    assert estimate(hasher.signature(mbpp[1]), hasher.signature(SAME_VOCABULARY)) < 0.3
    index = NearDuplicateIndex(0.8)
    index.add("mbpp/1", mbpp[1])
    assert index.query(SAME_VOCABULARY) == []
    # over all of MBPP, what is flagged is truly similar (exact Jaccard of shingle sets,
    # >= 0.7: the estimate from 128 permutations is within about 0.07 at 2 sigma). MBPP
    # holds repeated solutions and many one-line ones of the same shape (104 of 974).
    found = find_near_duplicates((str(t), c) for t, c in mbpp.items())
    assert 50 < len(found) < 150
    for key, kept in found.items():
        a, b = (set(hasher.shingle_hashes(mbpp[int(k)]).tolist()) for k in (key, kept))
        assert len(a & b) / len(a | b) >= 0.7, (key, kept)
        assert int(kept) < int(key)  # the first occurrence is the one kept


@pytest.mark.parametrize("scheme", ["affine32", "affine64", "legacy"])
def test_signatures_equal_datasketch_minhash_of_the_same_shingle_hashes(
        mbpp: dict[int, str], scheme: str) -> None:
    hasher = MinHasher(num_perm=128, seed=7, scheme=scheme)  # type: ignore[arg-type]
    codes = [mbpp[t] for t in sorted(mbpp)[:60]] + ["", "x = 1", JS_ADD]
    batch = hasher.signatures(codes)
    assert batch.shape == (len(codes), 128) and batch.dtype == (
        np.uint32 if scheme == "affine32" else np.uint64)
    for code, row in zip(codes, batch, strict=True):
        m = MinHash(num_perm=128, seed=7, scheme=scheme, hashfunc=int)
        m.update_batch(hasher.shingle_hashes(code).tolist())
        assert np.array_equal(m.hashvalues, row)
        assert np.array_equal(hasher.signature(code), row)  # batching mixes no documents
    m = MinHash(num_perm=128, seed=7, scheme=scheme, hashfunc=int)
    for h in hasher.shingle_hashes(codes[0]).tolist():
        m.update(h)  # one at a time, as datasketch users do
    assert np.array_equal(m.hashvalues, batch[0])


def _fmix(h: int, width: int) -> int:
    s1, m1, s2, m2, s3 = ((16, 0x85EBCA6B, 13, 0xC2B2AE35, 16) if width == 32
                          else (33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33))
    mask = (1 << width) - 1
    h = ((h ^ (h >> s1)) * m1) & mask
    h = ((h ^ (h >> s2)) * m2) & mask
    return h ^ (h >> s3)


def test_shingles_and_signature_match_a_direct_computation_without_numpy(
        mbpp: dict[int, str]) -> None:
    hasher = MinHasher(num_perm=16, seed=3, ngram=5)
    a, b = (list(map(int, p)) for p in MinHash(num_perm=16, seed=3).permutations)
    weights = [xxhash.xxh64_intdigest(f"shingle-{j}".encode()) | 1 for j in range(5)]
    for code in (mbpp[11], "x = 1", ""):
        tokens = [xxhash.xxh64_intdigest(t.encode()) for t in code_tokens(code)]
        windows = [tokens[i:i + 5] for i in range(max(1, len(tokens) - 4))]
        shingles = [_fmix(sum(t * w for t, w in zip(win, weights, strict=False))
                          % (1 << 64), 64) >> 32 for win in windows]
        assert hasher.shingle_hashes(code).tolist() == shingles
        expected = [min((ak * _fmix(h, 32) + bk) % (1 << 32) for h in shingles)
                    for ak, bk in zip(a, b, strict=True)]
        assert hasher.signature(code).tolist() == expected


def test_lean_minhash_of_a_signature_goes_into_datasketch_lsh(mbpp: dict[int, str]) -> None:
    hasher = MinHasher()
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    for task in (1, 3, 4, 11, 12):
        lsh.insert(task, hasher.lean(hasher.signature(mbpp[task])))
    query = hasher.lean(hasher.signature(RENAMED_MIN_COST))
    assert lsh.query(query) == [1]
    assert query.jaccard(LeanMinHash(seed=1, hashvalues=hasher.signature(mbpp[1]),
                                     scheme="affine32")) == 1.0
    # the index's own band keys are the ones MinHashLSH computes
    index = NearDuplicateIndex(0.8)
    for task in sorted(mbpp)[:200]:
        index.add(task, mbpp[task])
    for task in sorted(mbpp)[:200:7]:
        lean = hasher.lean(hasher.signature(mbpp[task]))
        assert sorted(index.lsh.query(lean)) == [sorted(mbpp).index(k)
                                                 for k in index.candidates(mbpp[task])]


DIGEST_SCRIPT = """
import hashlib, json, sys
from pipeline.minhash import MinHasher, find_near_duplicates
codes = [json.loads(line)["code"] for line in open(sys.argv[1])]
sigs = MinHasher().signatures(codes)
found = find_near_duplicates((str(i), c) for i, c in enumerate(codes))
print(hashlib.sha256(sigs.tobytes()).hexdigest(), hashlib.sha256(
    json.dumps(sorted(found.items())).encode()).hexdigest())
"""


def test_signatures_and_results_are_the_same_in_fresh_processes(mbpp: dict[int, str]) -> None:
    runs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", DIGEST_SCRIPT, str(MBPP)], env=env,
                             capture_output=True, text=True, check=True, timeout=120)
        runs.append(out.stdout.split())
    codes = list(mbpp.values())
    here = hashlib.sha256(MinHasher().signatures(codes).tobytes()).hexdigest()
    assert runs[0] == runs[1] and runs[0][0] == here


def test_javascript_falls_back_to_the_c_like_lexer() -> None:
    tokens = code_tokens(JS_ADD)
    assert tokens == code_tokens(JS_ADD, language="javascript")
    assert tokens[:8] == ["function", "ID", "(", "ID", ")", "{", "let", "ID"]
    assert "STR" in tokens and "===" in tokens and "console" in tokens
    assert not any("skip" in t or t.startswith(("//", "/*")) for t in tokens)
    assert code_tokens(JS_RENAMED) == tokens
    hasher = MinHasher()
    assert estimate(hasher.signature(JS_ADD), hasher.signature(JS_RENAMED)) == 1.0
    assert estimate(hasher.signature(JS_ADD), hasher.signature(JS_OTHER)) < 0.2
    # `//` stays floor division in Python; `) {` and `=>` make it C-like
    assert code_tokens("a = b // 2\n") == ["ID", "=", "ID", "//", "NUM"]
    assert code_tokens("f(x) { return 1; }")[5:7] == ["return", "NUM"]
    assert code_tokens("x => x // half\n") == ["ID", "=>", "ID"]


def test_empty_and_short_code_are_one_shingle() -> None:
    hasher = MinHasher()
    assert code_tokens("") == [] and code_tokens("  \n# only a comment\n") == []
    assert len(hasher.shingle_hashes("")) == 1 and len(hasher.shingle_hashes("x = 1")) == 1
    empty = hasher.signature("")
    assert np.array_equal(empty, hasher.signature("\n\n   # nothing\n"))
    assert not np.array_equal(empty, hasher.signature("x = 1"))
    assert not np.array_equal(hasher.signature("x = 1"), hasher.signature("x = 'a'"))
    found = find_near_duplicates([("a", ""), ("b", "def f(): return 1"), ("c", "# -"),
                                  ("d", "def g(): return 2")])
    assert found == {"c": "a", "d": "b"}


def test_index_rules_and_errors() -> None:
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\], got 0"):
        NearDuplicateIndex(0)
    index = NearDuplicateIndex()
    index.add("a", "x = 1")
    with pytest.raises(ValueError, match="key 'a' is already in the index"):
        index.add("a", "y = 2")
    with pytest.raises(ValueError, match="key 'k' is already in the index"):
        find_near_duplicates([("k", "x = 1"), ("k", "y = 2")])
    with pytest.raises(TypeError, match="pass the code or its signature"):
        index.query()
    assert len(index) == 1
