"""Log-probabilities from a GGUF model run in-process by llama.cpp (llama-cpp-python).

How the numbers are made: each token-id sequence is evaluated as given (`Llama.eval`; no
tokenisation here and no BOS added, the scorer decides the tokens), the logits of every
position are read back (`logits_all=True`), and a log-softmax in float64 with numpy gives
``log p(s[j+1] | s[:j+1])``. llama-cpp-python's completion API (`echo=True, logprobs=...`)
is deliberately not used: it works from text rather than the scorer's ids, is known to drop
special tokens from what it reports and, without a BOS, to be off by one position. Reading
the logits gives exactly the contract of `LogprobBackend` and nothing else.

Throughput: llama.cpp has no padded batch, so sequences run one at a time, each over the
whole prompt in `n_batch` chunks. One scorer process with as many threads as usable cores is
the fast layout on a CPU; several scorer processes would only compete for the same cores.
ggml's threads meet at a barrier after every op, so when other processes keep the cores busy,
fewer threads than cores can be several times faster: pass `n_threads` on a shared machine.

Memory: with `logits_all` llama-cpp-python keeps a float32 buffer of ``n_ctx x vocab``
logits (SmolLM2: 2048 x 49152 x 4 B = 0.4 GB; Qwen2.5: 2048 x 151936 x 4 B = 1.2 GB) on top
of the weights and the KV cache, so `n_ctx` should be no larger than the longest sequence
scored. The float64 log-softmax works on a bounded block of rows at a time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.scoring.base import LogprobBackend, ScoringError

INSTALL_HINT = "pip install '.[embedded]'"
"""What brings llama-cpp-python (the `embedded` extra)."""

_BLOCK_ELEMS = 8 << 20  # float64 elements per log-softmax block (64 MiB)
DEFAULT_BATCH = 512
"""Tokens per llama.cpp decode call (llama.cpp's own default); longer sequences take several."""


def usable_cores() -> int:
    """The number of cores this process may run on (its affinity mask, not the machine)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def token_logprobs(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``log_softmax(logits[j])[targets[j]]`` for every row j, in float64.

    `logits` is (n, vocab) of any float dtype; rows are converted and normalised a block at a
    time so the float64 copy stays bounded whatever n is.
    """
    n, vocab = logits.shape
    out = np.empty(n, dtype=np.float64)
    step = max(1, _BLOCK_ELEMS // max(vocab, 1))
    for lo in range(0, n, step):
        block = np.array(logits[lo:lo + step], dtype=np.float64)  # a copy, changed in place
        block -= block.max(axis=1, keepdims=True)
        picked = block[np.arange(block.shape[0]), targets[lo:lo + step]]
        np.exp(block, out=block)
        out[lo:lo + step] = picked - np.log(block.sum(axis=1))
    return out


class LlamaCppBackend(LogprobBackend):
    """A GGUF model evaluated in this process by llama.cpp; see the module docstring.

    `n_ctx` is the longest sequence accepted (`max_tokens`); `n_threads` defaults to the
    usable cores; `label` names the weights in `name` (default: the file's stem); `n_batch`
    is the number of tokens per decode call (it changes speed and peak memory, and the
    logits only within float tolerance).
    """

    def __init__(self, model_path: str | Path, *, n_ctx: int = 2048,
                 n_threads: int | None = None, label: str | None = None,
                 n_batch: int = DEFAULT_BATCH) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise ScoringError(
                f"the llama.cpp scorer needs llama-cpp-python — install it with "
                f"`{INSTALL_HINT}`") from None
        path = Path(model_path)
        if not path.is_file():
            raise ScoringError(
                f"GGUF model {path} not found — pass an existing file (the embedded models "
                f"come from `pipeline.llm.models.model_file(name)`)")
        if n_ctx < 2:
            raise ScoringError(f"n_ctx={n_ctx} is too small — a scored sequence has >= 2 tokens")
        threads = n_threads if n_threads is not None else usable_cores()
        if threads < 1:
            raise ScoringError(f"n_threads={threads} — use a positive number or None (all cores)")
        if n_batch < 1:
            raise ScoringError(f"n_batch={n_batch} — use a positive number of tokens per decode")
        try:
            self._llm: Any = llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, n_batch=min(n_ctx, n_batch),
                logits_all=True, n_threads=threads, n_threads_batch=threads, verbose=False)
        except (ValueError, RuntimeError) as e:
            raise ScoringError(
                f"llama.cpp could not load {path} ({e}) — check that it is a GGUF file this "
                f"llama-cpp-python ({llama_cpp.__version__}) supports and that n_ctx={n_ctx} "
                f"fits in memory") from e
        self.name = f"llamacpp:{label or path.stem}"
        self.max_tokens = n_ctx
        self.n_threads = threads
        self._n_vocab = int(self._llm.n_vocab())

    def logprobs(self, seqs: list[list[int]],
                 starts: list[int] | None = None) -> list[list[float]]:
        """See `LogprobBackend.logprobs`; sequences are evaluated one at a time."""
        if self._llm is None:
            raise ScoringError(f"{self.name} is closed — build a new backend to score again")
        for i, seq in enumerate(seqs):
            self._check(i, seq)
        return [self._one(seq) for seq in seqs]

    def _check(self, i: int, seq: list[int]) -> None:
        if len(seq) < 2:
            raise ScoringError(
                f"sequence {i} has {len(seq)} token(s) — a log-probability needs at least 2 "
                f"(a context token and a scored token)")
        if len(seq) > self.max_tokens:
            raise ScoringError(
                f"sequence {i} has {len(seq)} tokens, more than {self.name}'s context of "
                f"{self.max_tokens} — truncate it in the scorer or build the backend with a "
                f"larger n_ctx")
        lo, hi = min(seq), max(seq)
        if lo < 0 or hi >= self._n_vocab:
            bad = lo if lo < 0 else hi
            raise ScoringError(
                f"sequence {i} has token id {bad}, outside {self.name}'s vocabulary "
                f"[0, {self._n_vocab}) — tokenise with this model's tokenizer")

    def _one(self, seq: list[int]) -> list[float]:
        llm = self._llm
        llm.reset()
        try:
            llm.eval(seq)
        except RuntimeError as e:
            raise ScoringError(f"llama.cpp failed to evaluate {len(seq)} tokens ({e})") from e
        # Row j holds the logits after reading seq[: j + 1], i.e. the prediction of seq[j + 1].
        logits = llm.scores[: len(seq) - 1]
        targets = np.asarray(seq[1:], dtype=np.int64)
        return token_logprobs(logits, targets).tolist()

    def close(self) -> None:
        """Free the model and its context; later `logprobs` calls raise ScoringError."""
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None and hasattr(llm, "close"):
            llm.close()
