"""Whole-pipeline scaling: wall time and driver memory of `python -m pipeline run` vs size.

For each source size in --sizes this runs the real pipeline as a subprocess (Ray executor,
the real sandbox, the request and verdict caches, the dedup global steps, the dataset
writer) against a fake OpenAI server with instant replies, and samples with psutil every
0.2 s the RSS of the `python -m pipeline run` process (the Ray driver) and, separately,
the summed RSS of its whole process tree (raylet, GCS, workers, sandboxes; shared pages,
e.g. the object store, count once per process that maps them, so this over-counts).

What runs (the same for every size; only the numbers scale):
- Seeds: `seeds.source: directory` of generated .py files, 100 small functions per file
  (`def seed_<i>(x)`, a random chain of 8-12 integer statements; 3% more than the size, for
  the near-copies seed dedup drops), one folder per size, so reading, cutting and seed
  dedup scale with the size like a real tree would.
- OSS-Instruct only (`generation.strategies: [oss_instruct]`), `llm.backend: openai`,
  `llm.max_in_flight` 64; select, decontam and transform off.
- The fake server (`tests/fake_openai_server.py`, in a process of its own) finds the seed
  number in the prompt and answers a task made from it: an instruction of varied words
  (spelled-out task number, 30 pseudo-words, the steps in words), a function that is a
  random chain of 8-12 statements out of 22 kinds (so identifier-normalised MinHash sees different
  code) and 3 asserts whose expected values the server computed by running the function.
  Every 10th task has a wrong expected value (sandbox verdict `failed`), every 50th reply
  is prose without code (`unparseable`); the rest pass.

    PYTHONPATH=. .venv/bin/python benchmarks/scale.py [--sizes 10000,50000,100000]
        [--sandbox process|docker] [--work /tmp/pipeline-scale]

The sandbox default is `process` (bubblewrap): a 2k run took 46.2 s with it and 48.1 s with
`docker` (execute stage 12 s vs 14 s busy) on 2 cores. The fake server, the sampler and the
run share the machine's cores, so run nothing else meanwhile.

Reading the table: `wall s` is the subprocess from start to exit (Ray start-up, seed
loading, the run, the dataset write); `s/1k` is that per 1,000 source samples; `load`,
`ray`, `write` split it at the log lines "source samples" and "ray data finished";
`drv MB` is the driver's peak RSS (`@load`/`@ray`/`@write`: its peak in each phase),
`tree MB` the peak summed RSS of the process tree, `out MB` the output folder on disk
(allocated blocks) and `B/sample` that per source sample. `kept` is the dataset's rows,
`rejected` those of `rejected/` (by reason below the table). The ratios at the end are
the goals: driver RSS of the largest over the smallest size (within 1.2), and time per
sample likewise (within 1.2: linear). Only one run at a time; each size gets a fresh
output folder, and its row is saved to --work/rows-<sandbox>-<size>.json (`--reuse` takes
it from there instead of running that size again, to add sizes to a table).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_S = 0.2
FUNCS_PER_FILE = 100
#: Extra seed functions written, for those seed dedup drops as near-copies.
SEED_SURPLUS = 0.03

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
         "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "da", "gu", "sho", "fa",
              "bi", "co", "le", "mu", "ni", "po", "ra", "se", "ti", "wu", "ya", "ze", "ho",
              "ja", "ki", "ma", "no", "qui", "re", "su", "to", "va", "xe", "bo", "di", "fe",
              "gi"]
_VERBS = ["scale", "fold", "mix", "shift", "crunch", "twist", "blend", "churn", "warp", "tune",
          "spin", "grind", "weave", "knead", "stir", "press", "bend", "roll", "pack", "drift"]
_NOUNS = ["ledger", "signal", "counter", "budget", "orbit", "pixel", "tally", "meter", "token",
          "vector", "parcel", "beacon", "cipher", "harvest", "tide", "quota", "stack", "gauge",
          "ration", "score"]


def spell(n: int) -> str:
    """`n` (0 <= n < 10**9) in English words, e.g. 'twelve thousand three hundred four'."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, word in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return f"{spell(head)} {word}" + ("" if rest == 0 else " " + spell(rest))
    raise AssertionError(n)


# (code lines with {c}, words with {c}, range of c). Each keeps `x` an int and finishes.
_STEPS: list[tuple[list[str], str, tuple[int, int]]] = [
    (["x = x + {c}"], "add {c}", (2, 99)),
    (["x = x - {c}"], "subtract {c}", (2, 99)),
    (["x = x * {c}"], "multiply it by {c}", (2, 9)),
    (["x = x // {c}"], "floor-divide it by {c}", (2, 9)),
    (["x = x % {c}"], "keep the remainder modulo {c}", (7, 997)),
    (["x = abs(x - {c})"], "take the distance to {c}", (2, 500)),
    (["x = min(x, {c})"], "cap it at {c}", (50, 5000)),
    (["x = max(x, -{c})"], "raise it to at least minus {c}", (5, 500)),
    (["if x > {c}:", "    x = x - {c}"], "subtract {c} when it exceeds {c}", (10, 300)),
    (["if x % 2 == 0:", "    x = x // 2", "else:", "    x = 3 * x + 1"],
     "apply one Collatz step", (0, 0)),
    (["x = sum(range(x % {c}))"], "replace it by the sum of 0 up to its remainder mod {c}",
     (3, 40)),
    (["x = x + len(str(x))"], "add its number of characters as text", (0, 0)),
    (["x = int(str(abs(x))[::-1])"], "reverse the digits of its absolute value", (0, 0)),
    (["x = x ^ {c}"], "xor it with {c}", (1, 255)),
    (["x = (x << 1) & {c}"], "double it and mask it with {c}", (255, 65535)),
    (["x = x + bin(x).count('1')"], "add the count of ones in its binary form", (0, 0)),
    (["for _ in range({c}):", "    x = x + 1"], "increment it {c} times in a loop", (2, 6)),
    (["x = pow(x, 2, {c})"], "square it modulo {c}", (11, 999)),
    (["x = round(x / {c})"], "divide it by {c} and round", (2, 7)),
    (["x = sorted([x, {c}, x + {c}])[1]"], "take the median of it, {c} and it plus {c}",
     (1, 100)),
    (["q, r = divmod(x, {c})", "x = q + r"], "add quotient and remainder by {c}", (3, 50)),
    (["while x > {c}:", "    x = x // 2"], "halve it while it is above {c}", (100, 9000)),
]


_OPENERS = ["Write", "Implement", "Create", "Code up", "Define", "Provide", "Build",
            "Program"]


def _pseudo_words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice(_SYLLABLES) for _ in range(3)) for _ in range(n)]


def _chain(rng: random.Random, n_steps: int) -> tuple[list[str], list[str]]:
    """(code lines, descriptions) of a random chain of steps."""
    lines, words = [], []
    for _ in range(n_steps):
        code, text, (lo, hi) = rng.choice(_STEPS)
        c = rng.randint(lo, hi) if hi else 0
        lines += [line.format(c=c) for line in code]
        words.append(text.format(c=c))
    return lines, words


def seed_snippet(i: int) -> str:
    """The seed function number `i`: what the prompt carries and the server reads back."""
    rng = random.Random(f"seed-{i}")
    lines, _ = _chain(rng, rng.randint(8, 12))
    body = "\n".join("    " + line for line in lines)
    return f"def seed_{i}(x):\n{body}\n    return x\n"


def task(i: int) -> dict[str, str]:
    """The task the fake model answers for seed `i`: instruction, code and tests."""
    rng = random.Random(f"task-{i}")
    name = f"{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}_{i}"
    lines, words = _chain(rng, rng.randint(8, 12))
    code = f"def {name}(x: int) -> int:\n" + "".join(f"    {ln}\n" for ln in lines) + \
        "    return x\n"
    story = " ".join(_pseudo_words(rng, 30))
    opener = rng.choice(_OPENERS)
    instruction = (f"{opener} `{name}(x: int) -> int` ({story}; task {spell(i)}): "
                   f"{'; '.join(words)}. Return the result.")
    scope: dict[str, Any] = {}
    exec(code, scope)  # our own generated code: the expected values the tests check
    fn = scope[name]
    inputs = rng.sample(range(-40, 400), 3)
    expected = [fn(a) for a in inputs]
    if i % 10 == 3:
        expected[-1] += 1  # a wrong expected value: the sandbox says failed
    tests = "".join(f"assert {name}({a}) == {e}\n" for a, e in zip(inputs, expected,
                                                                         strict=True))
    return {"instruction": instruction, "code": code, "tests": tests}


_SEED_NUMBER = re.compile(r"def seed_(\d+)\(")


def reply_for(prompt: str) -> str:
    """The markdown reply to an OSS-Instruct prompt (prose without code every 50th)."""
    m = _SEED_NUMBER.search(prompt)
    if m is None or int(m.group(1)) % 50 == 11:
        return "I am not able to write a problem for this snippet."
    t = task(int(m.group(1)))
    return (f"### Problem\n{t['instruction']}\n\n### Solution\n```python\n{t['code']}```\n\n"
            f"### Tests\n```python\n{t['tests']}```\n")


def serve() -> None:
    """`--serve`: the fake server with task replies, in this process (prints 'port N')."""
    import asyncio
    from collections import deque

    from tests.fake_openai_server import FakeOpenAIServer, Reply

    def handler(body: dict[str, Any]) -> Reply:
        prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        text = reply_for(prompt)
        return Reply(text=text, prompt_tokens=len(prompt) // 4,
                     completion_tokens=len(text) // 4)

    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    srv = FakeOpenAIServer(handler=handler, model="fake")
    srv.requests = deque(maxlen=1)  # type: ignore[assignment]  # it keeps every body else
    srv._loop = loop
    loop.run_until_complete(srv._start())
    print(f"port {srv.port}", flush=True)
    loop.run_forever()


def make_seeds(folder: Path, n: int) -> None:
    """`n` seed functions and a SEED_SURPLUS more (seed dedup drops some near-copies) in
    files of FUNCS_PER_FILE under `folder` (kept between runs)."""
    done = folder / ".complete"
    n = int(n * (1 + SEED_SURPLUS)) + 10
    if done.is_file() and done.read_text() == str(n):
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for start in range(0, n, FUNCS_PER_FILE):
        funcs = [seed_snippet(i) for i in range(start, min(n, start + FUNCS_PER_FILE))]
        (folder / f"mod_{start // FUNCS_PER_FILE:05d}.py").write_text("\n\n".join(funcs))
    done.write_text(str(n))


def config(n: int, seeds: Path, base_url: str, sandbox: str) -> str:
    cfg = {
        "seeds": {"source": "directory", "path": str(seeds), "max_seeds": n},
        "llm": {"backend": "openai", "base_url": base_url, "model": "fake",
                "max_in_flight": 64},
        "generation": {"strategies": ["oss_instruct"]},
        "sandbox": {"backend": sandbox, "workers": 2},
        "ray": {"executor": "ray", "llm_actors": 1, "sandbox_actors": 1,
                "sandbox_batch_size": 256},
        "select": {"enabled": False},
        "decontam": {"enabled": False},
        "transform": {"enabled": False},
    }
    return json.dumps(cfg, indent=1)  # JSON is YAML


class RssSampler(threading.Thread):
    """Peak RSS of one process and of its process tree, every SAMPLE_S seconds."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.samples: list[tuple[float, int, int]] = []  # (time, driver, tree)
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            try:
                driver = self.proc.memory_info().rss
                tree = driver
                for child in self.proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        tree += child.memory_info().rss
            except psutil.Error:
                return
            self.samples.append((time.monotonic(), driver, tree))
            self.stop.wait(SAMPLE_S)

    def peak(self, start: float = 0.0, end: float = float("inf")) -> tuple[int, int]:
        inside = [(d, t) for when, d, t in self.samples if start <= when <= end]
        return (max(d for d, _ in inside), max(t for _, t in inside)) if inside else (0, 0)


def disk_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def run_size(n: int, sandbox: str, work: Path, base_url: str) -> dict[str, Any]:
    seeds, out = work / f"seeds-{n}", work / f"out-{sandbox}-{n}"
    make_seeds(seeds, n)
    shutil.rmtree(out, ignore_errors=True)
    cfg_path = work / f"config-{sandbox}-{n}.yaml"
    cfg_path.write_text(config(n, seeds, base_url, sandbox))
    log_path = work / f"log-{sandbox}-{n}.txt"
    cmd = [sys.executable, "-m", "pipeline", "run", "--config", str(cfg_path),
           "--output", str(out)]
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        sampler = RssSampler(proc.pid)
        sampler.start()
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log.write(line)
                if "source samples" in line:
                    marks.setdefault("loaded", time.monotonic())
                elif "ray data finished" in line:
                    marks.setdefault("ray_done", time.monotonic())
            rc = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: stop the run (its guard reaps Ray)
                proc.terminate()
                proc.wait()
    t1 = time.monotonic()
    sampler.stop.set()
    sampler.join()
    if rc != 0:
        tail = log_path.read_text().splitlines()[-20:]
        raise SystemExit(f"size {n}: pipeline exited {rc}; log {log_path}:\n" + "\n".join(tail))
    stats = json.loads((out / "stats.json").read_text())
    loaded, ray_done = marks.get("loaded", t0), marks.get("ray_done", t1)
    driver, tree = sampler.peak()
    return {
        "n": n, "seeds": stats["seeds"], "wall_s": t1 - t0,
        "load_s": loaded - t0, "ray_s": ray_done - loaded, "write_s": t1 - ray_done,
        "driver": driver, "tree": tree,
        "drv_load": sampler.peak(t0, loaded)[0], "drv_ray": sampler.peak(loaded, ray_done)[0],
        "drv_write": sampler.peak(ray_done, t1)[0],
        "out_bytes": disk_bytes(out), "kept": stats["kept"], "rejected": stats["rejected"],
        "reasons": stats["rejected_by_reason"],
        "stage_s": {k: v.get("seconds", 0.0) for k, v in stats["stages"].items()},
        "log": str(log_path), "out": str(out),
        # every 10th sample (2 s): seconds since start, driver MB, tree MB
        "timeline": [(round(when - t0, 1), round(d / 2**20), round(t / 2**20))
                     for when, d, t in sampler.samples[::10]],
    }


def _mb(b: float) -> str:
    return f"{b / 2**20:.0f}"


def report(rows: list[dict[str, Any]], sandbox: str) -> None:
    print(f"\nsandbox backend: {sandbox}; fake server replies instantly\n")
    head = (f"{'size':>7} {'wall s':>7} {'s/1k':>6} {'load':>6} {'ray':>7} {'write':>6} "
            f"{'drv MB':>7} {'@load':>6} {'@ray':>6} {'@write':>6} {'tree MB':>8} "
            f"{'out MB':>7} {'B/sample':>8} {'kept':>7} {'rejected':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['n']:>7} {r['wall_s']:>7.1f} {1000 * r['wall_s'] / r['n']:>6.2f} "
              f"{r['load_s']:>6.1f} {r['ray_s']:>7.1f} {r['write_s']:>6.1f} "
              f"{_mb(r['driver']):>7} {_mb(r['drv_load']):>6} {_mb(r['drv_ray']):>6} "
              f"{_mb(r['drv_write']):>6} {_mb(r['tree']):>8} {_mb(r['out_bytes']):>7} "
              f"{r['out_bytes'] / r['n']:>8.0f} {r['kept']:>7} {r['rejected']:>8}")
    print()
    for r in rows:
        reasons = ", ".join(f"{k}={v}" for k, v in r["reasons"].items())
        stages = ", ".join(f"{k} {v:.0f}" for k, v in r["stage_s"].items())
        print(f"{r['n']:>7}: rejected {reasons}; busy s per stage: {stages}")
    if len(rows) < 2:
        return
    lo, hi = min(rows, key=lambda r: r["n"]), max(rows, key=lambda r: r["n"])
    rss = hi["driver"] / lo["driver"]
    per = (hi["wall_s"] / hi["n"]) / (lo["wall_s"] / lo["n"])
    per_ray = (hi["ray_s"] / hi["n"]) / (lo["ray_s"] / lo["n"])
    print(f"\ndriver RSS({hi['n']})/RSS({lo['n']}) = {rss:.2f}  (goal <= 1.2: "
          f"{'holds' if rss <= 1.2 else 'FAILS'})")
    print(f"time per sample {hi['n']} vs {lo['n']} = {per:.2f}  (goal <= 1.2, linear: "
          f"{'holds' if per <= 1.2 else 'FAILS'}); the Ray part alone: {per_ray:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,50000,100000",
                    help="comma-separated source sizes, run smallest first")
    ap.add_argument("--sandbox", choices=["process", "docker"], default="process",
                    help="sandbox.backend (default process: 46 s vs 48 s for docker on a 2k "
                    "run, 2 cores)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pipeline-scale"),
                    help="seeds, configs, logs and outputs go here")
    ap.add_argument("--reuse", action="store_true",
                    help="take a size's row from an earlier invocation's rows-*.json in "
                    "--work instead of running it again")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve()
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    # a kill runs the `finally`s below: no orphaned fake server or pipeline run
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("port "):
            raise SystemExit(f"fake server did not start: {line!r}")
        base_url = f"http://127.0.0.1:{int(line.split()[1])}/v1"
        rows = []
        for n in sizes:
            saved = args.work / f"rows-{args.sandbox}-{n}.json"
            if args.reuse and saved.is_file():
                rows.append(json.loads(saved.read_text()))
                print(f"size {n}: measured earlier, from {saved}", flush=True)
                continue
            print(f"size {n}: running ...", flush=True)
            rows.append(run_size(n, args.sandbox, args.work, base_url))
            r = rows[-1]
            saved.write_text(json.dumps(r, indent=1))
            print(f"size {n}: {r['wall_s']:.1f} s, driver peak {_mb(r['driver'])} MB, "
                  f"kept {r['kept']}, log {r['log']}", flush=True)
        report(rows, args.sandbox)
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
