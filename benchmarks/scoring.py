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

Scaling (`--scaling N`): the pipeline's own `score` stage (`ScoreStage.process_batch`,
score cache on, in a temporary directory) over N distinct samples in the stage's batches of
`select.scorer.batch_size`, as a run feeds it; a line every `--every` samples with the
cumulative and the window tokens/s and the process's peak RSS, so one pass gives the
1k..N curve. Repeats of MBPP get a numbered suffix on the instruction, so that no sample
is a cache hit. The raw forward is measured first on the first `--every` samples' batches.

    PYTHONPATH=. python benchmarks/scoring.py [--model smollm2-135m] [--sizes 200,1000]
        [--backends transformers,llamacpp] [--vllm-url http://127.0.0.1:8000/v1]
    PYTHONPATH=. python benchmarks/scoring.py --scaling 10000 [--every 1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from pipeline.config import ScorerConfig
from pipeline.scoring.factory import build_backend
from pipeline.scoring.hf import load_tokenizer
from pipeline.scoring.scorer import Scorer, ScoreRequest

MBPP = Path(__file__).resolve().parents[2] / "shared" / "data" / "mbpp-full.jsonl"


def requests(n: int, distinct: bool = False) -> list[ScoreRequest]:
    """N MBPP pairs, cycled; with `distinct`, repeats get a numbered instruction suffix."""
    rows = [json.loads(line) for line in MBPP.read_text().splitlines() if line.strip()]
    out = []
    for i in range(n):
        row, lap = rows[i % len(rows)], i // len(rows)
        text = f"{row['text']} (variant {lap})" if distinct and lap else row["text"]
        out.append(ScoreRequest(f"{i}", text, row["code"]))
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def scaling(cfg: ScorerConfig, n: int, every: int) -> None:
    """The score stage over n samples in its batches; a line every `every` samples."""
    from pipeline.record import Sample
    from pipeline.stages.score import ScoreStage

    with tempfile.TemporaryDirectory() as tmp:
        cfg = cfg.model_copy(update={"cache_path": str(Path(tmp) / "scores.sqlite")})
        stage = ScoreStage(cfg)
        stage.process_batch([Sample(id=f"w{r.id}", instruction=f"warm-up {r.instruction}",
                                    response=r.response) for r in requests(8)])
        assert stage._scorer is not None
        stage.counters.clear()  # the warm-up's
        scorer, bs = stage._scorer, cfg.batch_size
        reqs = requests(n, distinct=True)
        seq_tokens = []
        for r in reqs:
            p = scorer.plan(r)
            seq_tokens.append(len(p.chat) + len(p.alone))
        head = [scorer.plan(r) for r in reqs[:every]]
        groups = [[s for p in head[k:k + bs] for s in (p.chat, p.alone)]
                  for k in range(0, len(head), bs)]
        t_raw = sum(raw_forward(scorer.backend, g) for g in groups)
        raw = sum(seq_tokens[:every]) / t_raw
        print(json.dumps({"backend": scorer.backend.name, "raw_tok_s_first": every,
                          "raw_tok_s": round(raw, 1)}), flush=True)
        print(f"{'samples':>8} {'tokens':>10} {'seconds':>9} {'tok/s':>8} {'window':>8} "
              f"{'/raw':>5} {'s/1k':>7} {'peak RSS MB':>12}", flush=True)
        t0 = last_t = time.perf_counter()
        last_tok = done_tok = bad = 0
        for k in range(0, n, bs):
            batch = [Sample(id=r.id, instruction=r.instruction, response=r.response)
                     for r in reqs[k:k + bs]]
            stage.process_batch(batch)
            bad += sum(s.rejected for s in batch)
            done_tok += sum(seq_tokens[k:k + bs])
            done = min(k + bs, n)
            if done % every < bs or done == n:
                now = time.perf_counter()
                window = (done_tok - last_tok) / (now - last_t)
                print(f"{done:>8} {done_tok:>10} {now - t0:>9.1f} "
                      f"{done_tok / (now - t0):>8.1f} {window:>8.1f} {window / raw:>5.2f} "
                      f"{1000 * (now - t0) / done:>7.1f} {peak_rss_mb():>12.0f}", flush=True)
                last_t, last_tok = now, done_tok
        print(json.dumps({"samples": n, "scored": stage.counters["scored"],
                          "score_cached": stage.counters["score_cached"],
                          "unscorable": bad}), flush=True)
        stage.teardown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--sizes", default="200,1000")
    ap.add_argument("--backends", default="transformers,llamacpp")
    ap.add_argument("--vllm-url", help="score with this vLLM server too (serving --model)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--scaling", type=int, help="the score stage over this many samples")
    ap.add_argument("--every", type=int, default=1000, help="--scaling: a line every k")
    args = ap.parse_args()
    if args.scaling:
        backend = args.backends.split(",")[0]
        scaling(ScorerConfig(backend=backend, model=args.model, threads=args.threads),
                args.scaling, args.every)
        return
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
