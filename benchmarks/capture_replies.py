"""Capture real OSS-Instruct replies from a local GGUF model, and measure their yield.

Starts `llama_cpp.server` on 127.0.0.1, sends the OSS-Instruct prompt for N stdlib seeds,
saves every reply to a JSON fixture (tests/fixtures/replies/<label>_<format>.json), then
parses each reply and runs solution + tests in a plain subprocess (a measurement only; the
pipeline runs them in its sandbox). `--measure-only` re-measures saved fixtures without a
model, e.g. after a parser change.

    python benchmarks/capture_replies.py --model /tmp/qwen.gguf --label qwen05b \
        --format markdown -n 12
    python benchmarks/capture_replies.py --measure-only tests/fixtures/replies/*.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.codecheck import top_level_names  # noqa: E402
from pipeline.config import SeedsConfig  # noqa: E402
from pipeline.parse import ParseFailure, parse_json_reply, parse_markdown_reply  # noqa: E402
from pipeline.prompts import render  # noqa: E402
from pipeline.seeds.snippets import load_seeds  # noqa: E402
from pipeline.stages.oss_instruct import copied_example, json_response_format  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "replies"


def start_server(model: Path, port: int, n_ctx: int) -> subprocess.Popen[bytes]:
    """Start llama.cpp's OpenAI server and wait until /v1/models answers."""
    log = open(f"/tmp/capture_llama_{port}.log", "wb")  # noqa: SIM115 - lives with the proc
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host",
         "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama server exited; see /tmp/capture_llama_{port}.log")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return proc
        except OSError:
            time.sleep(1)
    proc.terminate()
    raise RuntimeError("llama server did not start within 180 s")


def capture(args: argparse.Namespace) -> Path:
    """Send one request per seed and save the replies as a fixture file."""
    from openai import OpenAI

    seeds = load_seeds(SeedsConfig(max_seeds=args.n, shuffle_seed=args.shuffle_seed))
    json_mode = args.format == "json"
    template = "oss_instruct_json.jinja2" if json_mode else "oss_instruct.jinja2"
    proc = start_server(Path(args.model), args.port, args.n_ctx)
    records = []
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="none")
        for i, seed in enumerate(seeds):
            extra = {}
            if json_mode and not args.no_schema:
                extra["response_format"] = json_response_format("embedded")
            t0 = time.monotonic()
            resp = client.chat.completions.create(
                model="local", temperature=args.temperature, top_p=0.95,
                max_tokens=args.max_tokens, seed=1000 + i,
                messages=[{"role": "user", "content": render(template, seed=seed.seed)}],
                **extra)
            choice = resp.choices[0]
            records.append({"seed_ref": seed.seed_ref, "seed": seed.seed,
                            "template": template, "temperature": args.temperature,
                            "request_seed": 1000 + i, "finish_reason": choice.finish_reason,
                            "seconds": round(time.monotonic() - t0, 1),
                            "reply": choice.message.content or ""})
            print(f"[{i + 1}/{len(seeds)}] {seed.seed_ref} {records[-1]['seconds']}s "
                  f"{choice.finish_reason}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    out = FIXTURES / f"{args.label}_{args.format}.json"
    out.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n")
    return out


def run_tests(solution: str, tests: str, timeout_s: float = 10.0) -> str:
    """passed / failed / timeout for solution + tests in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "check.py"
        script.write_text(f"{solution}\n\n\n{tests}\n")
        try:
            r = subprocess.run([sys.executable, "-I", str(script)], cwd=tmp, timeout=timeout_s,
                               capture_output=True, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return "timeout"
    return "passed" if r.returncode == 0 else "failed"


def measure(path: Path) -> dict[str, int]:
    """Parse every reply of a fixture file and run the parsed ones; print a summary."""
    records = json.loads(path.read_text())
    tally: Counter[str] = Counter()
    passing_names: set[str] = set()
    for rec in records:
        parse = parse_json_reply if "json" in rec["template"] else parse_markdown_reply
        result = parse(rec["reply"])
        if isinstance(result, ParseFailure):
            verdict = f"rejected:{result.reason.value}"
        elif copied_example(rec["template"], result.solution):
            tally["parsed"] += 1
            verdict = "rejected:copied_example"
        else:
            tally["parsed"] += 1
            verdict = run_tests(result.solution, result.tests)
            if verdict == "passed":
                passing_names.add(min(top_level_names(result.solution)))
        tally[verdict] += 1
        print(f"  {rec['seed_ref']:45s} {verdict}")
    print(f"{path.name}: parsed {tally['parsed']}/{len(records)}, "
          f"passed {tally['passed']}/{len(records)} ({len(passing_names)} distinct function "
          f"names)  {dict(tally)}")
    return dict(tally)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="GGUF file to serve")
    ap.add_argument("--label", default="model", help="fixture name prefix, e.g. qwen05b")
    ap.add_argument("--format", choices=["markdown", "json"], default="markdown")
    ap.add_argument("--no-schema", action="store_true",
                    help="json prompt without response_format (prompt-only JSON)")
    ap.add_argument("-n", type=int, default=12, help="number of seeds / requests")
    ap.add_argument("--shuffle-seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--measure-only", nargs="*", type=Path, metavar="FIXTURE")
    args = ap.parse_args()
    if args.measure_only:
        for path in args.measure_only:
            measure(path)
        return
    if not args.model or not os.path.isfile(args.model):
        ap.error("--model must be a GGUF file")
    measure(capture(args))


if __name__ == "__main__":
    main()
