"""The contract every scoring backend meets: log-probabilities of given token ids.

Tokenisation, the chat template, the response's token span, truncation and the loss
arithmetic live in one place (`pipeline.scoring.scorer`), shared by every backend, so the
same text gives the same tokens everywhere and backends differ only in how they run the
model. A backend takes whole token-id sequences and returns, for each, the natural-log
probability of every token after the first given the tokens before it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class ScoringError(RuntimeError):
    """A scorer that cannot be built or run as configured. The message says how to fix it."""


class LogprobBackend(ABC):
    """Runs a causal LM over token ids.

    `name` identifies the backend and its weights (e.g. ``transformers:smollm2-135m:float32``):
    scores made by backends with equal names are interchangeable and may be reused.
    `max_tokens` is the longest sequence the backend accepts (its context).
    """

    name: str
    max_tokens: int

    @abstractmethod
    def logprobs(self, seqs: list[list[int]],
                 starts: list[int] | None = None) -> list[list[float]]:
        """For each sequence `s` (len(s) >= 2), ``out[j] = log p(s[j+1] | s[:j+1])``,
        j = 0 .. len(s) - 2, in nats. Sequences may have different lengths; the backend
        batches them as it likes, and must return the same numbers as one at a time
        (within float tolerance). `starts[i]`, when given, is the first token of
        `seqs[i]` whose log-probability is needed: a backend may skip the positions
        before it (NaN there), sparing the vocabulary projection of the prompt. Raises
        ScoringError when the model cannot run."""

    def close(self) -> None:
        """Release the model (memory, server connections); default: nothing to release."""
        return None
