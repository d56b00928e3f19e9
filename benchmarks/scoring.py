"""Scoring throughput: tokens scored per second against the raw forward pass of the same
weights, in the same run, per backend; and how it scales with the number of samples.

Samples are MBPP problems (../shared/data/mbpp-full.jsonl: prompt as the instruction,
reference solution as the response), cycled to N. For each backend:

- scorer: `Scorer.score` on all N (chat template, offsets, both sequences per sample,
  batching, log-softmax, the loss arithmetic). Tokens counted: every token of both
  sequences, i.e. what the model had to run.
- raw forward: the same token sequences through the bare model with nothing else
  (transformers: the same length-bucketed padded batches, logits discarded; llama.cpp:
  `eval` of each sequence). This is the limit for that runtime.

The figure to meet: scorer tokens/s >= 0.8 x the fastest raw forward this machine runs.

    PYTHONPATH=. python benchmarks/scoring.py [--model smollm2-135m] [--sizes 200,1000]
        [--backends transformers,llamacpp] [--vllm-url http://127.0.0.1:8000/v1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipeline.config import ScorerConfig
from pipeline.scoring.factory import build_backend
from pipeline.scoring.hf import load_tokenizer
from pipeline.scoring.scorer import Scorer, ScoreRequest

MBPP = Path(__file__).resolve().parents[2] / "shared" / "data" / "mbpp-full.jsonl"


def requests(n: int) -> list[ScoreRequest]:
    rows = [json.loads(line) for line in MBPP.read_text().splitlines() if line.strip()]
    return [ScoreRequest(f"{i}", rows[i % len(rows)]["text"], rows[i % len(rows)]["code"])
            for i in range(n)]


def raw_forward(backend: object, seqs: list[list[int]]) -> float:
    """Seconds for the bare model over `seqs`, batched as the backend batches them."""
    t0 = time.perf_counter()
    if hasattr(backend, "padded_batches"):  # transformers
        import torch

        with torch.inference_mode():
            for _, ids, mask in backend.padded_batches(seqs):
                backend.model(input_ids=ids, attention_mask=mask)
    elif hasattr(backend, "_llm"):  # llama.cpp
        for s in seqs:
            backend._llm.reset()
            backend._llm.eval(s)
    else:
        return float("nan")
    return time.perf_counter() - t0


def measure(cfg: ScorerConfig, sizes: list[int], tok: object) -> list[dict[str, object]]:
    backend = build_backend(cfg)
    scorer = Scorer(backend, tok, cfg.max_tokens)
    scorer.score(requests(8))  # warm-up
    out = []
    for n in sizes:
        reqs = requests(n)
        plans = [scorer.plan(r) for r in reqs]
        seqs = [s for p in plans for s in (p.chat, p.alone)]
        tokens = sum(len(s) for s in seqs)
        t0 = time.perf_counter()
        scores = scorer.score(reqs)
        t_score = time.perf_counter() - t0
        t_raw = raw_forward(backend, seqs)
        bad = sum(1 for s in scores if s.loss is None)
        row = {"backend": backend.name, "samples": n, "tokens": tokens,
               "scorer_tok_s": round(tokens / t_score, 1),
               "raw_tok_s": round(tokens / t_raw, 1) if t_raw == t_raw else None,
               "unscored": bad}
        print(json.dumps(row), flush=True)
        out.append(row)
    backend.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--sizes", default="200,1000")
    ap.add_argument("--backends", default="transformers,llamacpp")
    ap.add_argument("--vllm-url", help="score with this vLLM server too (serving --model)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    tok = load_tokenizer(args.model)
    rows = []
    for name in args.backends.split(","):
        rows += measure(ScorerConfig(backend=name, model=args.model, threads=args.threads),
                        sizes, tok)
    if args.vllm_url:
        rows += measure(ScorerConfig(backend="vllm", model=args.model, base_url=args.vllm_url),
                        sizes, tok)
    fastest = max((r["raw_tok_s"] for r in rows if r["raw_tok_s"]), default=None)
    print(f"\nfastest raw forward here: {fastest} tok/s")
    for r in rows:
        own = f"{r['scorer_tok_s'] / r['raw_tok_s']:.2f}" if r["raw_tok_s"] else "n/a"
        vs = f"{r['scorer_tok_s'] / fastest:.2f}" if fastest else "n/a"
        print(f"{r['backend']:<40} n={r['samples']:>6}  scorer {r['scorer_tok_s']:>8} tok/s"
              f"  / own raw {own}  / fastest raw {vs} (goal >= 0.8)")


if __name__ == "__main__":
    main()
