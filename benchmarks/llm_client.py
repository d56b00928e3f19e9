"""Throughput of the pipeline's LLM stage against the fake OpenAI server.

Requests go through a trivial `LLMStage` subclass (cache off), called batch by batch the
way an executor calls it; the fake server runs in its own process so it does not share
the client's GIL. Two figures:

1. latency 2 s, 256 in flight: achieved requests/s over the ideal 256 / 2 s = 128 req/s
   (target >= 0.9): does the stage keep the pipe full?
2. latency 100 ms, 256 in flight: requests/s and client CPU seconds per 1,000 requests
   (target >= 366 req/s on a 2-core machine): how much CPU does a request cost?

    PYTHONPATH=. python benchmarks/llm_client.py [--procs 2] [--concurrent-batches 2]

`--procs` runs that many client processes (like several Ray actors), each with
max_in_flight = 256 / procs; `--concurrent-batches` calls the stage from that many threads
at once (like a Ray actor with max_concurrency). CPU time is the client processes' own
(`time.process_time`), measured after a warm-up batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from pipeline.config import LLMConfig, RayConfig
from pipeline.llm.client import ChatReply
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.record import Sample
from pipeline.stages import llm_stage
from pipeline.stages.llm_stage import LLMStage
from tests.fake_openai_server import FakeOpenAIServer

PROMPT = "Write a Python function that parses this snippet and explain it:\n" + "x = 1\n" * 120


#: LLM-stage batches of a run are this many times max_in_flight (the config's default).
WAVES = RayConfig().llm_waves_per_batch


class BenchStage(LLMStage):
    """One request per sample; the reply text becomes the response."""

    name = "bench"
    inputs = ("seed",)
    outputs = ("response",)

    def build_messages(self, sample: Sample) -> list[dict[str, Any]]:
        return [{"role": "system", "content": "You are a careful programmer."},
                {"role": "user", "content": f"{PROMPT}# {sample.seed}"}]

    def parse_reply(self, sample: Sample, reply: ChatReply) -> list[Sample]:
        sample.response = reply.text
        return [sample]


@dataclass
class Result:
    requests: int
    wall_s: float
    cpu_s: float
    rejected: int


def _samples(start: int, n: int) -> list[Sample]:
    return [Sample(strategy="bench", seed=f"s{i}", id=f"bench-{i}") for i in
            range(start, start + n)]


def _drive(stage: LLMStage, batches: list[list[Sample]], threads: int) -> int:
    """Call the stage on every batch from `threads` threads; return the rejects."""
    work: queue.Queue[list[Sample]] = queue.Queue()
    for b in batches:
        work.put(b)
    rejected = [0] * threads

    def worker(k: int) -> None:
        while True:
            try:
                batch = work.get_nowait()
            except queue.Empty:
                return
            rejected[k] += sum(s.rejected for s in stage(batch))

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(rejected)


def run_client(base_url: str, n: int, in_flight: int, threads: int, offset: int,
               start_at: float | None = None, batch_size: int | None = None) -> Result:
    """One client process: warm up with one batch, then time `n` requests."""
    cfg = LLMConfig(max_in_flight=in_flight, timeout_s=60, cache=False)
    stage = BenchStage(LLMEndpoint(base_url, "fake-model"), cfg, None, seed=0)
    stage.batch_size = batch_size or WAVES * in_flight
    stage.setup()
    bs = stage.batch_size
    _drive(stage, [_samples(offset - in_flight, in_flight)], 1)  # warm-up: open connections
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    samples = _samples(offset, n)
    batches = [samples[i:i + bs] for i in range(0, n, bs)]
    t0, c0 = time.perf_counter(), time.process_time()
    rejected = _drive(stage, batches, threads)
    res = Result(n, time.perf_counter() - t0, time.process_time() - c0, rejected)
    stage.teardown()
    return res


def _child(args: tuple[Any, ...], out: Any) -> None:
    out.put(run_client(*args))


def measure(latency_s: float, n: int, procs: int, threads: int,
            batch_size: int | None) -> Result:
    """Spawn the server, run `procs` client processes, return the combined result."""
    server = FakeOpenAIServer.spawn(latency_s=latency_s)
    try:
        if procs == 1:
            return run_client(server.base_url, n, 256, threads, 1_000_000, None, batch_size)
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        start_at = time.time() + 8.0  # after every child has started and warmed up
        ps = [ctx.Process(target=_child, args=(
            (server.base_url, n // procs, 256 // procs, threads, (k + 1) * 1_000_000,
             start_at, batch_size), out)) for k in range(procs)]
        for p in ps:
            p.start()
        results = [out.get(timeout=900) for _ in ps]
        for p in ps:
            p.join()
        return Result(sum(r.requests for r in results), max(r.wall_s for r in results),
                      sum(r.cpu_s for r in results), sum(r.rejected for r in results))
    finally:
        server.stop()


def server_alone(n: int = 10_000, conc: int = 64) -> float:
    """Requests/s the fake server sustains against a bare aiohttp client (no pipeline)."""
    import aiohttp

    server = FakeOpenAIServer.spawn(latency_s=0.0)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": PROMPT}]})

    async def go() -> float:
        sem = asyncio.Semaphore(conc)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as http:
            async def one() -> None:
                async with sem, http.post(server.base_url + "/chat/completions", data=body,
                                          headers={"content-type": "application/json"}) as r:
                    await r.read()
            await asyncio.gather(*[one() for _ in range(conc)])
            t0 = time.perf_counter()
            await asyncio.gather(*[one() for _ in range(n)])
            return n / (time.perf_counter() - t0)

    loop = llm_stage.new_event_loop()
    try:
        return loop.run_until_complete(go())
    finally:
        loop.close()
        server.stop()


def _loop_name() -> str:
    loop = llm_stage.new_event_loop()
    loop.close()
    return type(loop).__module__.split(".")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", type=int, default=1, help="client processes")
    ap.add_argument("--concurrent-batches", type=int, default=1,
                    help="threads calling the stage at once (per process)")
    ap.add_argument("--requests-slow", type=int, default=2048, help="requests at 2 s")
    ap.add_argument("--requests-fast", type=int, default=8192, help="requests at 100 ms")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="samples per stage call (default: the stage's own, "
                    f"ray.llm_waves_per_batch = {WAVES} x max_in_flight)")
    ap.add_argument("--loop", choices=["default", "asyncio"], default="default",
                    help="asyncio: the stdlib loop even where uvloop is installed")
    ap.add_argument("--only", choices=["server", "slow", "fast"], default=None)
    args = ap.parse_args()
    if args.loop == "asyncio":
        llm_stage.new_event_loop = asyncio.new_event_loop  # type: ignore[assignment]
    print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}, "
          f"client processes: {args.procs}, concurrent batches: {args.concurrent_batches}, "
          f"batch size: {args.batch_size or WAVES * 256 // args.procs}, "
          f"event loop: {_loop_name()}")
    if args.only in (None, "server"):
        print(f"(0) fake server alone (bare aiohttp client, 64 connections): "
              f"{server_alone():.0f} req/s (must stay well above the figures below)")
    if args.only in (None, "slow"):
        r = measure(2.0, args.requests_slow, args.procs, args.concurrent_batches,
                    args.batch_size)
        rate = r.requests / r.wall_s
        print(f"(1) latency 2 s, 256 in flight: {r.requests} requests in {r.wall_s:.1f} s = "
              f"{rate:.1f} req/s; ideal 128 req/s; achieved/ideal = {rate / 128:.3f} "
              f"(target >= 0.9); rejected {r.rejected}")
    if args.only in (None, "fast"):
        r = measure(0.1, args.requests_fast, args.procs, args.concurrent_batches,
                    args.batch_size)
        rate = r.requests / r.wall_s
        print(f"(2) latency 100 ms, 256 in flight: {r.requests} requests in {r.wall_s:.1f} s "
              f"= {rate:.0f} req/s (target >= 366); client CPU {1000 * r.cpu_s / r.requests:.2f}"
              f" s per 1,000 requests; rejected {r.rejected}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
