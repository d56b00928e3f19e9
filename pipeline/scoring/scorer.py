"""Loss, loss alone and IFD of instruction/response pairs, on any `LogprobBackend`.

Definitions (nats, mean over the response's tokens):

- `loss`: the response as the assistant turn after the instruction as the user turn, in the
  scoring model's own chat template (the GGUF's template for packaged models, default
  system prompt included). Only the response's content tokens count: not the template's
  tokens, not the end-of-turn token. The response's token span comes from the character
  offsets of the tokenised conversation, so a BPE merge across the boundary cannot shift it.
- `loss_alone`: the same response text tokenised on its own after the model's BOS token if
  it has one (SmolLM2's is `<|im_start|>` although it does not add it by default), no chat
  template. Without a BOS the first token has no context and is not counted.
- `ifd` = loss / loss_alone: the loss ratio (Superfiltering's instruction-following
  difficulty as a ratio of mean losses, not of perplexities); IFD >= 1 means the
  instruction does not help the model predict the response.
- `response_tokens`: the response tokens `loss` averages over.

Truncation rule: a conversation longer than `max_tokens` keeps the instruction whole and the
first K response tokens that fit (K = max_tokens - tokens before the response); the
response alone is cut to the same K tokens. `truncated_tokens` records how many were cut.
A pair that cannot be scored (empty response, an instruction that leaves no room, a
template that rewrites the response) gets `error` and no numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline.scoring.base import LogprobBackend, ScoringError

#: Sequences sent to the backend per call (it buckets them by length itself).
CHUNK = 64


@dataclass(frozen=True)
class ScoreRequest:
    id: str
    instruction: str
    response: str


@dataclass
class Score:
    loss: float | None = None
    loss_alone: float | None = None
    ifd: float | None = None
    response_tokens: int | None = None
    truncated_tokens: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "loss_alone": self.loss_alone, "ifd": self.ifd,
                "response_tokens": self.response_tokens,
                "score_truncated_tokens": self.truncated_tokens, "score_error": self.error}


@dataclass
class _Plan:
    chat: list[int]
    span: tuple[int, int]  # response tokens chat[start:end]
    alone: list[int]
    truncated: int


class Scorer:
    """Tokenises with `tokenizer` (a Hugging Face fast tokenizer with a chat template),
    runs `backend`, and turns log-probabilities into `Score`s."""

    def __init__(self, backend: LogprobBackend, tokenizer: Any, max_tokens: int) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ScoringError("the scorer needs a fast tokenizer (character offsets)")
        if not getattr(tokenizer, "chat_template", None):
            raise ScoringError("the scoring model's tokenizer has no chat template")
        self.backend = backend
        self.tok = tokenizer
        self.max_tokens = min(max_tokens, backend.max_tokens)
        self.name = backend.name

    def plan(self, req: ScoreRequest) -> _Plan:
        """Token ids and the response span for one pair; raises ValueError with the reason."""
        if not req.response.strip():
            raise ValueError("empty response")
        user = [{"role": "user", "content": req.instruction}]
        prefix = self.tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = self.tok.apply_chat_template(
            [*user, {"role": "assistant", "content": req.response}], tokenize=False)
        if not full.startswith(prefix) or not full[len(prefix):].startswith(req.response):
            raise ValueError("the chat template does not place the response verbatim after "
                             "the generation prompt")
        enc = self.tok(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        lo, hi = len(prefix), len(prefix) + len(req.response)
        inside = [i for i, (a, b) in enumerate(offsets) if a >= lo and a < hi and b > a]
        if not inside:
            raise ValueError("the response has no tokens of its own")
        start, end = inside[0], inside[-1] + 1
        if start == 0 or offsets[start - 1][1] > lo:
            raise ValueError("a token spans the instruction/response boundary")
        room = self.max_tokens - start
        if room < 1:
            raise ValueError(f"the instruction takes {start} tokens, leaving no room for the "
                             f"response in max_tokens {self.max_tokens}")
        keep = min(end - start, room)
        bos = [] if self.tok.bos_token_id is None else [self.tok.bos_token_id]
        alone = bos + self.tok(req.response, add_special_tokens=False)["input_ids"]
        alone = alone[:len(bos) + keep]
        return _Plan(chat=ids[:start + keep], span=(start, start + keep), alone=alone,
                     truncated=(end - start) - keep)

    def score(self, requests: list[ScoreRequest]) -> list[Score]:
        """One Score per request, in order. Raises ScoringError when the backend fails."""
        scores = [Score() for _ in requests]
        plans: list[tuple[int, _Plan]] = []
        for i, req in enumerate(requests):
            try:
                plans.append((i, self.plan(req)))
            except ValueError as exc:
                scores[i].error = str(exc)
        seqs: list[list[int]] = []
        starts: list[int] = []
        for _, p in plans:
            seqs.append(p.chat)
            starts.append(p.span[0])
            if len(p.alone) >= 2:
                seqs.append(p.alone)
                starts.append(1)
        got: list[list[float]] = []
        for k in range(0, len(seqs), CHUNK):
            got.extend(self.backend.logprobs(seqs[k:k + CHUNK], starts[k:k + CHUNK]))
        it = iter(got)
        for i, p in plans:
            chat_lp = next(it)
            alone_lp = next(it) if len(p.alone) >= 2 else []
            start, end = p.span
            resp = chat_lp[start - 1:end - 1]
            sc = scores[i]
            sc.loss = _mean_nll(resp)
            sc.response_tokens = len(resp)
            sc.truncated_tokens = p.truncated
            if alone_lp:
                sc.loss_alone = _mean_nll(alone_lp)
                sc.ifd = sc.loss / sc.loss_alone if sc.loss_alone > 0 else None
            if sc.ifd is None:
                sc.error = ("one response token and no BOS: loss alone has no token to "
                            "average" if not alone_lp else "loss alone is 0: IFD undefined")
        return scores


def _mean_nll(lps: list[float]) -> float:
    value = -math.fsum(lps) / len(lps)
    if not math.isfinite(value):
        raise ScoringError("the backend returned a non-finite log-probability")
    return value
