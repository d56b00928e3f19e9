"""Generated tokens per second: the pipeline's LLM stage against vLLM's own, same prompts.

Starts vLLM through `llm.backend: vllm`, the way a run does (the GPU when there is one, the
CPU build otherwise; `bash scripts/setup_vllm.sh` first). It then sends the same N chat
requests (OSS-Instruct-style prompts, fixed per-request seeds, the cache off) twice:

1. **vLLM alone**: a bare aiohttp client with every request in flight at once. Nothing
   on the client side holds vLLM back, so this is the server's throughput for these prompts.
2. **The pipeline**: an `LLMStage` called batch by batch, as an executor calls it, with
   `llm.max_in_flight` = N.

It prints completion tokens per second for each and their ratio (goal >= 0.85).

    PYTHONPATH=. python benchmarks/vllm_throughput.py [--model qwen2.5-coder-0.5b] [-n 64]
        [--max-tokens 256] [--device auto]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp

from pipeline.config import LLMConfig
from pipeline.llm.client import ChatReply
from pipeline.llm.server import start_backend
from pipeline.record import Sample
from pipeline.stages.llm_stage import LLMStage

TOPICS = ["parse a CSV line", "merge two sorted lists", "validate an e-mail address",
          "count word frequencies", "flatten a nested list", "rotate a matrix",
          "find the longest common prefix", "convert Roman numerals", "run-length encode",
          "check balanced brackets", "compute a moving average", "group anagrams"]


def messages(i: int) -> list[dict[str, str]]:
    topic = TOPICS[i % len(TOPICS)]
    return [{"role": "system", "content": "You are a careful Python programmer."},
            {"role": "user", "content": f"Write a self-contained Python programming exercise "
             f"(#{i}) about how to {topic}, then a solution, then three assert tests."}]


class BenchStage(LLMStage):
    name = "bench"
    inputs = ("seed",)
    outputs = ("response",)

    def build_messages(self, sample: Sample) -> list[dict[str, Any]]:
        return messages(int(sample.seed))

    def request_params(self, sample: Sample) -> dict[str, Any]:
        return {"seed": int(sample.seed)}

    def parse_reply(self, sample: Sample, reply: ChatReply) -> list[Sample]:
        sample.response = reply.text
        return [sample]


async def bare(base_url: str, bodies: list[dict[str, Any]]) -> tuple[int, float]:
    """(completion tokens, seconds) with every request in flight at once."""
    conn = aiohttp.TCPConnector(limit=len(bodies))
    async with aiohttp.ClientSession(connector=conn, trust_env=False) as http:
        async def one(body: dict[str, Any]) -> int:
            async with http.post(f"{base_url}/chat/completions", json=body) as r:
                r.raise_for_status()
                return (await r.json())["usage"]["completion_tokens"]

        t0 = time.perf_counter()
        tokens = await asyncio.gather(*(one(b) for b in bodies))
        return sum(tokens), time.perf_counter() - t0


def pipeline_stage(endpoint: Any, cfg: LLMConfig, n: int) -> tuple[int, float]:
    stage = BenchStage(endpoint, cfg, None, seed=0)
    stage.batch_size = n
    stage.setup()
    samples = [Sample(strategy="bench", seed=str(i), id=f"bench-{i}") for i in range(n)]
    t0 = time.perf_counter()
    out = stage(samples)
    wall = time.perf_counter() - t0
    stage.teardown()
    bad = [s for s in out if s.rejected]
    if bad:
        raise SystemExit(f"{len(bad)} requests failed: {bad[0].reject_detail}")
    return stage.counters["completion_tokens"], wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    ap.add_argument("--log-dir", default="runs/bench-vllm")
    args = ap.parse_args()
    cfg = LLMConfig(backend="vllm", vllm={"model": args.model, "device": args.device},
                    max_in_flight=args.n, max_tokens=args.max_tokens, cache=False,
                    temperature=0.7, timeout_s=1800, max_retries=0)
    t0 = time.perf_counter()
    with start_backend(cfg, log_dir=args.log_dir) as ep:
        print(f"vLLM ({args.model}, device {args.device}) ready in "
              f"{time.perf_counter() - t0:.0f} s")
        bodies = [{"model": ep.model, "messages": messages(i), "temperature": cfg.temperature,
                   "top_p": cfg.top_p, "max_tokens": cfg.max_tokens, "seed": i}
                  for i in range(args.n)]
        asyncio.run(bare(ep.base_url, bodies[:4]))  # warm-up
        p_tok, p_s = pipeline_stage(ep, cfg, args.n)
        v_tok, v_s = asyncio.run(bare(ep.base_url, bodies))
    v_rate, p_rate = v_tok / v_s, p_tok / p_s
    print(f"(1) vLLM alone: {v_tok} completion tokens in {v_s:.1f} s = {v_rate:.1f} tok/s")
    print(f"(2) pipeline LLM stage: {p_tok} completion tokens in {p_s:.1f} s = "
          f"{p_rate:.1f} tok/s")
    print(f"pipeline / vLLM = {p_rate / v_rate:.3f} (goal >= 0.85); {args.n} requests, "
          f"max_tokens {args.max_tokens}")
    print(json.dumps({"vllm_tok_s": round(v_rate, 2), "pipeline_tok_s": round(p_rate, 2),
                      "ratio": round(p_rate / v_rate, 3)}))


if __name__ == "__main__":
    main()
