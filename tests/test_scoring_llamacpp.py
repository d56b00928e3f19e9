"""LlamaCppBackend against an independent reference: transformers on the same GGUF weights.

The token ids come from the HF tokenizer read out of the GGUF file, and the reference
log-probabilities from `AutoModelForCausalLM` (weights dequantised to float32) with torch's
log_softmax, so nothing here reuses the code under test.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from pipeline.scoring.base import ScoringError

pytestmark = pytest.mark.model

TEXTS = {
    "code": "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "prose": "The quick brown fox jumps over the lazy dog. It was a sunny day in the park.",
    "unicode": "naïve café — 数据 🚀",
    "chat": ("<|im_start|>user\nWrite a function that reverses a string.<|im_end|>\n"
             "<|im_start|>assistant\ndef rev(s):\n    return s[::-1]<|im_end|>\n"),
}
N_CTX = 256
# One thread: ggml's threads wait for each other at every op, so on a shared 2-core machine two
# threads were 4-20x slower than one (measured with other jobs running); speed is not tested here.
THREADS = 1


@pytest.fixture(scope="module")
def gguf():
    from pipeline.llm.models import model_file

    return model_file("smollm2-135m")


@pytest.fixture(scope="module")
def tok(gguf):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    return transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@pytest.fixture(scope="module")
def seqs(tok) -> dict[str, list[int]]:
    return {k: tok(v, add_special_tokens=False)["input_ids"] for k, v in TEXTS.items()}


@pytest.fixture(scope="module")
def backend(gguf):
    from pipeline.scoring.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(gguf, n_ctx=N_CTX, n_threads=THREADS)
    yield b
    b.close()


@pytest.fixture(scope="module")
def reference(gguf):
    """seq -> transformers' log p(seq[j+1] | seq[:j+1]) in float64."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()

    def run(seq: list[int]) -> np.ndarray:
        ids = torch.tensor([seq])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].double()
        lp = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
        return lp.numpy()

    return run


def test_name_and_context(backend, gguf):
    assert backend.name == f"llamacpp:{gguf.stem}"
    assert backend.max_tokens == N_CTX


def test_matches_transformers(backend, seqs, reference):
    got_all, ref_all = [], []
    for key, seq in seqs.items():
        got = np.array(backend.logprobs([seq])[0])
        ref = reference(seq)
        assert got.shape == ref.shape == (len(seq) - 1,), key
        # Measured (SmolLM2-135M Q4_1, llama-cpp-python 0.3.36): relative difference of the mean
        # NLL 0.07%-0.28% per text (llama.cpp quantises activations to 8 bits for the Q4 dot
        # products; transformers runs dequantised float32). 2% leaves room for other CPUs.
        rel = abs(got.mean() - ref.mean()) / abs(ref.mean())
        assert rel < 0.02, f"{key}: mean NLL {-got.mean():.4f} vs {-ref.mean():.4f}"
        got_all.append(got)
        ref_all.append(ref)
    got, ref = np.concatenate(got_all), np.concatenate(ref_all)
    # Measured: Pearson 0.9998 over 79 tokens, largest per-token difference 0.22 nats.
    assert np.corrcoef(got, ref)[0, 1] > 0.99
    assert np.abs(got - ref).max() < 1.0


def test_values_are_logprobs(backend, seqs, reference):
    seq = seqs["code"]
    got = backend.logprobs([seq])[0]
    assert all(isinstance(x, float) and math.isfinite(x) and x <= 0.0 for x in got)
    # The top-1 tokens agree with the reference where it is confident: a shifted (off-by-one)
    # result would fail this.
    ref = reference(seq)
    confident = ref > math.log(0.9)
    assert confident.sum() >= 3
    assert np.all(np.array(got)[confident] > math.log(0.5))


def test_batch_equals_one_at_a_time(backend, seqs):
    a, b, c = seqs["code"], seqs["prose"], seqs["chat"]
    together = backend.logprobs([a, b, c])
    # Score b after a long different sequence and again after a short one: nothing from the
    # previous sequence's KV cache may leak into the next.
    alone = [backend.logprobs([a])[0], backend.logprobs([b])[0], backend.logprobs([c])[0]]
    assert backend.logprobs([c, b])[1] == pytest.approx(alone[1], abs=1e-6)
    for x, y in zip(together, alone, strict=True):
        assert x == pytest.approx(y, abs=1e-6)
    assert backend.logprobs([a]) == backend.logprobs([a])  # deterministic


def test_small_decode_batches_agree(gguf, seqs, backend):
    from pipeline.scoring.llamacpp import LlamaCppBackend

    small = LlamaCppBackend(gguf, n_ctx=N_CTX, n_threads=THREADS, n_batch=7)
    try:
        seq = seqs["chat"]
        assert small.logprobs([seq])[0] == pytest.approx(backend.logprobs([seq])[0], abs=1e-3)
    finally:
        small.close()


def test_two_tokens_and_unicode(backend, seqs, tok, reference):
    two = seqs["code"][:2]
    out = backend.logprobs([two])
    assert len(out) == 1 and len(out[0]) == 1
    assert out[0][0] == pytest.approx(float(reference(two)[0]), abs=0.3)
    uni = seqs["unicode"]
    assert tok.decode(uni) == TEXTS["unicode"]
    assert len(backend.logprobs([uni])[0]) == len(uni) - 1


def test_rejects_bad_sequences(backend, seqs):
    too_long = (seqs["prose"] * (N_CTX // len(seqs["prose"]) + 1))[: N_CTX + 1]
    with pytest.raises(ScoringError, match=r"sequence 1 has 257 tokens, more than .* context "
                                           r"of 256 — truncate"):
        backend.logprobs([seqs["code"], too_long])
    assert len(backend.logprobs([too_long[:N_CTX]])[0]) == N_CTX - 1  # exactly n_ctx is fine
    with pytest.raises(ScoringError, match="has 1 token"):
        backend.logprobs([[42]])
    with pytest.raises(ScoringError, match="has 0 token"):
        backend.logprobs([[]])
    with pytest.raises(ScoringError, match="token id 10000000, outside"):
        backend.logprobs([[1, 10_000_000]])
    assert backend.logprobs([]) == []


def test_constructor_errors(tmp_path):
    from pipeline.scoring.llamacpp import LlamaCppBackend

    with pytest.raises(ScoringError, match="not found"):
        LlamaCppBackend(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file")
    with pytest.raises(ScoringError, match="could not load"):
        LlamaCppBackend(junk)


def test_closed_backend_raises(gguf):
    from pipeline.scoring.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(gguf, n_ctx=32, label="tiny")
    assert b.name == "llamacpp:tiny"
    assert b.n_threads == len(os.sched_getaffinity(0))
    assert len(b.logprobs([[1, 2, 3]])[0]) == 2
    b.close()
    b.close()  # twice is fine
    with pytest.raises(ScoringError, match="closed"):
        b.logprobs([[1, 2, 3]])
