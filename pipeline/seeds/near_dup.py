"""MinHash near-duplicate detection for seed snippets.

Two copies of one function that differ by a renamed local, an extra comment or an edited
docstring should count as one seed. A snippet becomes a list of tokens taken from its
tree-sitter parse (`code_tokens`): comments are left out, a string literal is one token,
and a plain identifier that is neither called nor an attribute (a parameter or a local)
becomes a placeholder, so renaming it changes nothing. Called names, attributes,
keywords, operators and literals stay: they are what makes two functions different.
Token 5-gram shingles go into a `datasketch` MinHash (fixed permutations: the same
snippets give the same answers on every machine), and a MinHashLSH index finds earlier
snippets whose estimated Jaccard similarity reaches the threshold.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from datasketch import MinHash, MinHashLSH
from tree_sitter import Node

#: Tokens per shingle.
SHINGLE_SIZE = 5
#: MinHash permutations: 128 keep the Jaccard estimate within about +-0.09 (2 sigma).
NUM_PERM = 128
#: Seed of the MinHash permutations; fixed so results never depend on the process.
MINHASH_SEED = 1
#: What a local or parameter name becomes in `code_tokens`.
NAME_PLACEHOLDER = "<name>"
#: LSH band weights (false positives, false negatives). Candidates are checked against the
#: threshold afterwards, so a false positive costs one comparison while a false negative
#: keeps a duplicate: with these, a pair at the threshold is a candidate 95% of the time
#: (datasketch's even default: 40%), one 0.05 above it over 99%.
LSH_WEIGHTS = (0.05, 0.95)


def _leaves(node: Node) -> Iterator[Node]:
    """Leaf tokens of `node` in source order; a comment is skipped, a string is one leaf."""
    if node.type.endswith("comment"):
        return
    if node.child_count == 0 or "string" in node.type:
        yield node
        return
    for child in node.children:
        yield from _leaves(child)


def code_tokens(node: Node) -> list[str]:
    """The normalized token stream of a parsed snippet (any tree-sitter language).

    Grammars name plain variable references `identifier`; one that follows a `.`
    (attribute) or precedes a `(` (call) is kept, any other becomes `NAME_PLACEHOLDER`.
    """
    leaves = list(_leaves(node))
    tokens: list[str] = []
    for i, leaf in enumerate(leaves):
        text = (leaf.text or b"").decode("utf-8", "replace")
        if not text.strip():
            continue  # zero-width tokens (e.g. Python's indent/dedent markers)
        if leaf.type == "identifier":
            after_dot = i > 0 and leaves[i - 1].type == "."
            called = i + 1 < len(leaves) and leaves[i + 1].type == "("
            if not (after_dot or called):
                text = NAME_PLACEHOLDER
        tokens.append(text)
    return tokens


def shingles(tokens: Sequence[str], size: int = SHINGLE_SIZE) -> set[bytes]:
    """The distinct `size`-token shingles of `tokens` (the whole stream if shorter)."""
    if len(tokens) <= size:
        return {"\x1f".join(tokens).encode("utf-8")}
    return {"\x1f".join(tokens[i:i + size]).encode("utf-8")
            for i in range(len(tokens) - size + 1)}


def minhash(tokens: Sequence[str]) -> MinHash:
    """The MinHash signature of a token stream's shingles."""
    m = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED)
    m.update_batch(sorted(shingles(tokens)))
    return m


class NearDuplicateIndex:
    """Snippets seen so far; `add` refuses one that nearly repeats an earlier one.

    LSH proposes candidates, tuned to miss few (`LSH_WEIGHTS`); a candidate counts only
    when the estimated Jaccard similarity of the two signatures is at least `threshold`.
    """

    def __init__(self, threshold: float) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self._lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM,
                               weights=LSH_WEIGHTS)
        self._signatures: list[MinHash] = []

    def __len__(self) -> int:
        return len(self._signatures)

    def match(self, tokens: Sequence[str]) -> tuple[int, float] | None:
        """(index, similarity) of the most similar earlier snippet at or over the threshold."""
        return self._match(minhash(tokens))

    def _match(self, sig: MinHash) -> tuple[int, float] | None:
        best: tuple[int, float] | None = None
        for key in sorted(self._lsh.query(sig)):
            score = sig.jaccard(self._signatures[key])
            if score >= self.threshold and (best is None or score > best[1]):
                best = (key, score)
        return best

    def add(self, tokens: Sequence[str]) -> tuple[int, float] | None:
        """Index `tokens` unless a near-duplicate is there: then return that match instead."""
        sig = minhash(tokens)
        found = self._match(sig)
        if found is None:
            self._lsh.insert(len(self._signatures), sig)
            self._signatures.append(sig)
        return found
