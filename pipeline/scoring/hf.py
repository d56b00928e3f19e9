"""Hugging Face `transformers` scoring backend (CPU or GPU), and the tokenizer every backend
shares.

A model is a packaged GGUF name (`smollm2-135m`, `qwen2.5-coder-0.5b`: transformers
dequantises it with `gguf_file=`, the same weights the embedded server and the llama.cpp
scorer run), a local directory, or a Hugging Face id (needs a reachable hub): GenCode's "the
model being trained" is a checkpoint directory. On this CPU transformers in float32 is the
fastest runtime for these weights.

Batches are length-bucketed: sequences are sorted by length and packed into right-padded
batches of at most `batch_tokens` padded tokens, so padding stays small and the logits
(batch x length x vocabulary floats) stay bounded. Log-probabilities are taken as the target
logit minus the log-sum-exp of its row, in float32, without materialising a log-softmax.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.llm.models import EMBEDDED_MODELS, ModelError, model_file
from pipeline.scoring.base import LogprobBackend, ScoringError


def _source(model: str) -> tuple[str, dict[str, Any]]:
    """(path or id, from_pretrained kwargs) for a model name, directory or hub id."""
    if model in EMBEDDED_MODELS:
        try:
            path = model_file(model)
        except ModelError as exc:
            raise ScoringError(str(exc)) from None
        return str(path.parent), {"gguf_file": path.name}
    local = Path(model).expanduser()
    if local.is_file() and local.suffix == ".gguf":
        return str(local.parent), {"gguf_file": local.name}
    return (str(local), {}) if local.exists() else (model, {})


def load_tokenizer(model: str) -> Any:
    """The model's fast tokenizer with its chat template (for packaged models: the GGUF's)."""
    from transformers import AutoTokenizer

    src, kw = _source(model)
    try:
        return AutoTokenizer.from_pretrained(src, **kw)
    except (OSError, ValueError) as exc:
        raise ScoringError(f"cannot load the tokenizer of select.scorer.model {model!r}: {exc} "
                           "— name a packaged model, a local directory or a reachable "
                           "Hugging Face id") from None


def _threads(n: int | None) -> int:
    if n:
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class HFBackend(LogprobBackend):
    """A causal LM run with transformers/torch."""

    def __init__(self, model: str, *, device: str = "auto", dtype: str = "float32",
                 max_tokens: int = 2048, batch_tokens: int = 4096,
                 threads: int | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            torch.set_num_threads(_threads(threads))
        try:
            torch_dtype = getattr(torch, dtype)
        except AttributeError:
            raise ScoringError(f"select.scorer.dtype {dtype!r} is not a torch dtype — use "
                               "float32, bfloat16 or float16") from None
        src, kw = _source(model)
        try:
            self.model = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype, **kw)
        except (OSError, ValueError) as exc:
            raise ScoringError(f"cannot load select.scorer.model {model!r}: {exc}") from None
        self.model.to(device).eval()
        self.device = device
        self.batch_tokens = batch_tokens
        ctx = getattr(self.model.config, "max_position_embeddings", None) or max_tokens
        self.max_tokens = min(max_tokens, ctx)
        self.name = f"transformers:{model}:{dtype}"
        self._decoder = self.model.get_decoder()
        self._head = self.model.get_output_embeddings()
        self._torch = torch

    def padded_batches(self, seqs: list[list[int]]) -> Iterator[tuple[list[int], Any, Any]]:
        """(indices into `seqs`, right-padded ids, attention mask) per forward batch:
        sequences sorted by length, at most `batch_tokens` padded tokens a batch."""
        lengths = [len(s) for s in seqs]
        batch: list[int] = []
        for i in sorted(range(len(seqs)), key=lengths.__getitem__):
            # Ascending length: the one being added is the batch's longest.
            if batch and lengths[i] * (len(batch) + 1) > self.batch_tokens:
                yield self._pad(batch, seqs)
                batch = []
            batch.append(i)
        if batch:
            yield self._pad(batch, seqs)

    def _pad(self, batch: list[int], seqs: list[list[int]]) -> tuple[list[int], Any, Any]:
        torch = self._torch
        width = max(len(seqs[i]) for i in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, :len(seqs[i])] = torch.tensor(seqs[i])
            mask[row, :len(seqs[i])] = 1
        return batch, ids.to(self.device), mask.to(self.device)

    def logprobs(self, seqs: list[list[int]],
                 starts: list[int] | None = None) -> list[list[float]]:
        torch = self._torch
        for s in seqs:
            if not 2 <= len(s) <= self.max_tokens:
                raise ScoringError(f"a sequence of {len(s)} tokens: the backend takes 2 to "
                                   f"{self.max_tokens}")
        lengths = [len(s) for s in seqs]
        first = [max(1, st) for st in starts] if starts is not None else [1] * len(seqs)
        out: list[list[float]] = [[] for _ in seqs]
        with torch.inference_mode():
            for batch, ids, mask in self.padded_batches(seqs):
                hidden = self._decoder(input_ids=ids, attention_mask=mask).last_hidden_state
                # Only the positions whose next token is wanted go through the vocabulary
                # projection: the prompt's logits would be computed and thrown away.
                rows = torch.cat([torch.full((lengths[i] - first[i],), r) for r, i in
                                  enumerate(batch)]).to(self.device)
                cols = torch.cat([torch.arange(first[i] - 1, lengths[i] - 1)
                                  for i in batch]).to(self.device)
                logits = self._head(hidden[rows, cols]).float()
                target = logits.gather(-1, ids[rows, cols + 1][:, None])[:, 0]
                lp = (target - torch.logsumexp(logits, dim=-1)).cpu().tolist()
                del logits, hidden
                k = 0
                for i in batch:
                    n = lengths[i] - first[i]
                    out[i] = [math.nan] * (first[i] - 1) + lp[k:k + n]
                    k += n
        return out

    def close(self) -> None:
        del self.model
