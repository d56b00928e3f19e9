"""Capture real replies to the Self-Instruct, solve, Evol-Instruct and Case2Code prompts.

Starts `llama_cpp.server` on 127.0.0.1 (reusing `capture_replies.start_server`), renders
each prompt from `prompts/` with tasks from data/seed_tasks.jsonl, and saves every reply to
tests/fixtures/replies/strategies/qwen05b_<kind>.json as a list of
`{kind, variables, template, request_seed, finish_reason, seconds, reply}`. The strategy
tests pin how each reply parses.

    python benchmarks/capture_strategies.py --model ~/.cache/pipeline/models/<gguf>
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from capture_replies import FIXTURES, start_server  # noqa: E402

from pipeline.prompts import render  # noqa: E402
from pipeline.stages.evol_instruct import function_names  # noqa: E402

SEED_TASKS = Path(__file__).resolve().parent.parent / "data" / "seed_tasks.jsonl"
EVOL_OPERATORS = ("add_constraints", "rarer_requirement", "more_reasoning", "erroneous_code",
                  "complexity")


def requests(tasks: list[dict[str, Any]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """(template, variables) per fixture file."""
    by_id = {t["id"]: t for t in tasks}
    si = [("self_instruct.jinja2", {"examples": [t["instruction"] for t in tasks[i:i + 4]],
                                    "num_tasks": 5}) for i in (0, 20, 40)]
    solve = [("solve.jinja2", {"instruction": tasks[i]["instruction"]}) for i in (3, 30, 60)]
    evol = [("evol_depth.jinja2", {"instruction": tasks[5 + 7 * k]["instruction"],
                                   "operator": op,
                                   "name": (function_names(tasks[5 + 7 * k]["instruction"])
                                            or [""])[0]})
            for k, op in enumerate(EVOL_OPERATORS)]
    evol.append(("evol_breadth.jinja2", {"instruction": tasks[50]["instruction"]}))
    c2c = [("case2code.jinja2", {"name": "collapse_whitespace", "examples": [
        {"call": "collapse_whitespace('  hello \\t\\n  world  ')", "output": "'hello world'"},
        {"call": "collapse_whitespace('a  b   c')", "output": "'a b c'"}]}),
           ("case2code.jinja2", {"name": "digit_sum", "examples": [
               {"call": "digit_sum(123)", "output": "6"}, {"call": "digit_sum(0)", "output": "0"},
               {"call": "digit_sum(9999)", "output": "36"}]})]
    assert by_id
    return {"self_instruct": si, "solve": solve, "evol": evol, "case2code": c2c}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="GGUF file to serve")
    ap.add_argument("--port", type=int, default=8771)
    ap.add_argument("--only", nargs="*", help="fixture kinds to capture (default: all)")
    args = ap.parse_args()
    from openai import OpenAI

    tasks = [json.loads(line) for line in SEED_TASKS.read_text().splitlines() if line.strip()]
    proc = start_server(Path(args.model), args.port, 4096)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="none")
        for kind, reqs in requests(tasks).items():
            if args.only and kind not in args.only:
                continue
            records = []
            for i, (template, variables) in enumerate(reqs):
                t0 = time.monotonic()
                resp = client.chat.completions.create(
                    model="local", temperature=0.7, top_p=0.95, max_tokens=640, seed=2000 + i,
                    messages=[{"role": "user", "content": render(template, **variables)}])
                choice = resp.choices[0]
                records.append({"kind": kind, "template": template, "variables": variables,
                                "request_seed": 2000 + i,
                                "finish_reason": choice.finish_reason,
                                "seconds": round(time.monotonic() - t0, 1),
                                "reply": choice.message.content or ""})
                print(f"{kind} [{i + 1}/{len(reqs)}] {records[-1]['seconds']}s", flush=True)
            out = FIXTURES / "strategies" / f"qwen05b_{kind}.json"
            out.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
