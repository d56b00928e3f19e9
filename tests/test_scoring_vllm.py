"""`VllmBackend` against a real vLLM server, checked against an independent transformers forward.

The server (CPU build, `bash scripts/setup_vllm.sh`) serves SmolLM2-135M in float32 from the
Hugging Face directory converted from its packaged GGUF; the reference loads that same
directory into transformers in float32 and takes log-softmax of the logits. Measured on a
2-core CPU: at most 3.4e-5 nats apart per token, mean NLL within 1e-6 relative. Faults a real
server does not produce on demand (garbage replies, hangs, a 500) are tested against the
fake server in test_scoring_vllm_faults.py, which needs no vLLM.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import LLMConfig
from pipeline.llm.server import _free_port, _managed_server
from pipeline.llm.vllm import vllm_command
from pipeline.scoring.base import ScoringError
from pipeline.scoring.vllm_backend import VllmBackend

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MODEL = "smollm2-135m"
TEXTS = {
    "code": '''def merge_sorted(a: list[int], b: list[int]) -> list[int]:
    """Merge two sorted lists into one sorted list."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i]); i += 1
        else:
            out.append(b[j]); j += 1
    return out + a[i:] + b[j:]


assert merge_sorted([1, 4, 9], [2, 3, 10]) == [1, 2, 3, 4, 9, 10]
''',
    "prose": "Write a function that returns the n-th Fibonacci number. Explain its "
             "running time, then give an iterative version that uses constant memory. " * 3,
    # Multi-byte characters split across byte-level tokens: a token alone is not valid UTF-8.
    "unicode": "Écris « bonjour » — 你好，世界！ Привет, мир. 🚀🐍 naïve café ñ ∑∫√ e\u0301",
}


class VllmServer:
    """A float32 vLLM server on a free port, in its own process group, until `stop()`."""

    def __init__(self, log_path: Path) -> None:
        port = _free_port()
        cfg = LLMConfig(backend="vllm", vllm={"model": MODEL, "dtype": "float32"})
        argv, self.model, env = vllm_command(cfg, port)
        self.model_dir = argv[argv.index("--model") + 1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._ctx = _managed_server(argv, name="vLLM server", port=port, health_path="/health",
                                    timeout_s=900, timeout_setting="the fixture's timeout_s",
                                    log_path=log_path, env=env)
        self._ctx.__enter__()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, the whole process group (engine workers included)."""
        self._ctx.__exit__(None, None, None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    srv = VllmServer(tmp_path_factory.mktemp("vllm-scoring") / "vllm-server.log")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def hf(server: VllmServer) -> tuple[Any, Any]:
    """(tokenizer, float32 model) from the directory the server serves."""
    torch = pytest.importorskip("torch", reason="the reference needs `pip install torch`")
    transformers = pytest.importorskip("transformers",
                                       reason="the reference needs `pip install transformers`")
    tok = transformers.AutoTokenizer.from_pretrained(server.model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(server.model_dir,
                                                              dtype=torch.float32)
    return tok, model.eval()


@pytest.fixture
def backend(server: VllmServer) -> VllmBackend:
    return VllmBackend(server.base_url, server.model, max_tokens=2047, label=f"{MODEL}:float32")


def _reference(model: Any, seq: list[int]) -> list[float]:
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([seq])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return logp[torch.arange(len(seq) - 1), torch.tensor(seq[1:])].tolist()


def _mean_nll(lps: list[float]) -> float:
    return -sum(lps) / len(lps)


@pytest.mark.parametrize("kind", list(TEXTS))
def test_logprobs_match_a_transformers_forward(backend: VllmBackend, hf: tuple[Any, Any],
                                               kind: str) -> None:
    tok, model = hf
    seq = tok(TEXTS[kind])["input_ids"]
    assert len(seq) >= 20
    [got] = backend.logprobs([seq])
    ref = _reference(model, seq)
    assert len(got) == len(seq) - 1
    assert all(math.isfinite(x) and x <= 0 for x in got)
    worst = max(abs(a - b) for a, b in zip(got, ref, strict=True))
    assert worst < 1e-3, f"per-token log-probs differ by up to {worst:.2e} nats"
    rel = abs(_mean_nll(got) - _mean_nll(ref)) / _mean_nll(ref)
    assert rel < 1e-3, f"mean NLL {_mean_nll(got):.6f} vs {_mean_nll(ref):.6f}"


def test_a_batch_equals_one_at_a_time(backend: VllmBackend, hf: tuple[Any, Any]) -> None:
    tok, _ = hf
    base = [tok(t)["input_ids"] for t in TEXTS.values()]
    # Different lengths, a shared prefix (vLLM's prefix cache) and a repeat in one batch.
    seqs = [*base, base[0][:7], base[1] + base[2], base[0], [base[2][0], base[2][1]]]
    together = backend.logprobs(seqs)
    alone = [backend.logprobs([s])[0] for s in seqs]
    assert [len(x) for x in together] == [len(s) - 1 for s in seqs]
    worst = max(abs(a - b) for x, y in zip(together, alone, strict=True)
                for a, b in zip(x, y, strict=True))
    assert worst < 1e-4
    assert together[0][:6] == pytest.approx(together[3], abs=1e-4)


def test_works_from_a_thread_and_under_to_thread(backend: VllmBackend,
                                                 hf: tuple[Any, Any]) -> None:
    seq = hf[0](TEXTS["code"])["input_ids"]
    expected = backend.logprobs([seq])
    box: list[list[list[float]]] = []
    worker = threading.Thread(target=lambda: box.append(backend.logprobs([seq])))
    worker.start()
    worker.join()
    assert box[0][0] == pytest.approx(expected[0], abs=1e-4)

    async def inside_a_loop() -> list[list[float]]:
        with pytest.raises(ScoringError, match="asyncio.to_thread"):
            backend.logprobs([seq])
        return await asyncio.to_thread(backend.logprobs, [seq])

    assert asyncio.run(inside_a_loop())[0] == pytest.approx(expected[0], abs=1e-4)


def test_sequence_lengths_are_checked(backend: VllmBackend) -> None:
    with pytest.raises(ScoringError, match=r"sequence 1 has 2048 tokens.*2 to 2047"):
        backend.logprobs([[1, 2], [5] * 2048])
    with pytest.raises(ScoringError, match="sequence 0 has 1 tokens"):
        backend.logprobs([[5]])
    assert backend.logprobs([]) == []


def test_a_sequence_that_fills_the_servers_context_names_max_model_len(
        server: VllmServer) -> None:
    # The server's --max-model-len is 2048 and the request needs one token more.
    at_limit = VllmBackend(server.base_url, server.model, max_tokens=2048)
    assert len(at_limit.logprobs([[5] * 2047])[0]) == 2046
    with pytest.raises(ScoringError, match=r"HTTP 400 .*max-model-len"):
        at_limit.logprobs([[5] * 2048])


def test_wrong_model_name_lists_the_fix(server: VllmServer) -> None:
    wrong = VllmBackend(server.base_url, "no-such-model")
    with pytest.raises(ScoringError, match=r"HTTP 404.*no-such-model.*does not exist.*/models"):
        wrong.logprobs([[1, 2, 3]])


def test_scorer_gives_the_same_scores_on_vllm_and_transformers(server: VllmServer) -> None:
    """The same weights through two runtimes (the GGUF dequantised by transformers in this
    process; its converted directory served by vLLM in float32): the whole scorer, chat
    template and span included, gives the same loss, loss alone and IFD."""
    from pipeline.config import ScorerConfig
    from pipeline.scoring.factory import build_scorer
    from pipeline.scoring.scorer import ScoreRequest

    pairs = [ScoreRequest("a", "Write add(a, b).", "def add(a, b):\n    return a + b\n"),
             ScoreRequest("u", "Greet.", "naïve café — bonjour 🚀 数据"),
             ScoreRequest("e", "", "An answer to an empty instruction.")]
    on_hf = build_scorer(ScorerConfig(backend="transformers", model=MODEL, threads=2))
    on_vllm = build_scorer(ScorerConfig(backend="vllm", model=MODEL, base_url=server.base_url,
                                        served_model=server.model))
    try:
        for a, b in zip(on_hf.score(pairs), on_vllm.score(pairs), strict=True):
            assert a.response_tokens == b.response_tokens
            assert b.loss == pytest.approx(a.loss, rel=1e-4)
            assert b.loss_alone == pytest.approx(a.loss_alone, rel=1e-4)
            assert b.ifd == pytest.approx(a.ifd, rel=2e-4)
    finally:
        on_hf.backend.close()
