"""kill -9 at random moments, rerun the same command: the same dataset, row by row.

A real run (`python -m pipeline run`: Ray executor, Docker sandbox, transformations and
their variant gate) against a fake OpenAI server with latency is SIGKILLed several times
at random moments and restarted each time; the final dataset and `rejected` are compared
with those of an uninterrupted run. Across the restarts the server counts the requests it
received and the sandbox counts the executions it really started
(`PIPELINE_SANDBOX_AUDIT`): the overhead may be at most what was in flight at each kill.
After each kill nothing of the dead run may live on: no process of its Ray instance, and
no request reaching the server.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import datasets
import psutil
import pytest
import yaml

from pipeline.config import parse_config
from tests.fake_openai_server import FakeOpenAIServer, Reply
from tests.procs import processes_naming

pytestmark = [pytest.mark.docker, pytest.mark.ray, pytest.mark.slow]

SEEDS = 14
LATENCY_S = 0.4
IN_FLIGHT = 2
KILLS = 3


def _seed_text(i: int) -> str:
    return (f'def seed_{i}(x):\n    """Seed {i}: add {i} to x, one step at a time."""\n'
            f"    total = x\n    for _ in range({i}):\n        total += 1\n"
            f"    return total\n")


#: (name, what the instruction asks, the body, a call and its value): distinct problems,
#: so that no dedup step folds them together.
TASKS = [
    ("double", "Return twice the given integer.", "return x * 2", "double(4)", 8),
    ("square", "Compute the square of a number.", "return x ** 2", "square(5)", 25),
    ("negate", "Flip the sign of a value.", "return -x", "negate(3)", -3),
    ("halve", "Give the floor of half of an int.", "return x // 2", "halve(7)", 3),
    ("last_digit", "Extract the final decimal digit of a non-negative integer.",
     "return x % 10", "last_digit(1234)", 4),
    ("is_even", "Tell whether an integer is divisible by two.", "return x % 2 == 0",
     "is_even(6)", True),
    ("digits", "Count how many decimal digits an integer has, ignoring its sign.",
     "return len(str(abs(x)))", "digits(-120)", 3),
    ("sign", "Report -1, 0 or 1 according to the sign.", "return (x > 0) - (x < 0)",
     "sign(-9)", -1),
    ("clamp_unit", "Limit a float to the closed interval from zero to one.",
     "return min(max(x, 0.0), 1.0)", "clamp_unit(1.5)", 1.0),
    ("reverse_text", "Produce a string backwards.", "return x[::-1]", "reverse_text('abc')",
     "cba"),
    ("vowels", "Tally the vowels in a word.", "return sum(c in 'aeiou' for c in x)",
     "vowels('banana')", 3),
    ("first_upper", "Capitalise only the initial character of some text.",
     "return x[:1].upper() + x[1:]", "first_upper('hello')", "Hello"),
    ("total", "Add up every element of a list of numbers.",
     "acc = 0\n    for v in x:\n        acc += v\n    return acc", "total([1, 2, 3])", 6),
    ("largest", "Find the maximum of a non-empty list without using max().",
     "best = x[0]\n    for v in x:\n        if v > best:\n            best = v\n"
     "    return best", "largest([3, 9, 2])", 9),
]


def _reply(i: int) -> str:
    name, ask, body, call, value = TASKS[i]
    if i % 7 == 3:
        return "Sure! Here is a nice problem. I hope it helps."  # unparseable
    fails = " and False" if i % 5 == 4 else ""  # tests the solution fails
    value = repr(value) + fails
    return (f"### Problem\n{ask} Name the function `{name}`.\n\n"
            f"### Solution\n```python\ndef {name}(x):\n    {body}\n```\n\n"
            f"### Tests\n```python\nassert {call} == {value}\n```\n")


class CountingModel:
    """Replies by seed; notes when each request arrived."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> Reply:
        with self.lock:
            self.arrivals.append(time.monotonic())
        prompt = request["messages"][-1]["content"]
        i = next(k for k in range(SEEDS - 1, -1, -1) if f"def seed_{k}(" in prompt)
        return Reply.ok(_reply(i), prompt_tokens=50, completion_tokens=40)


def _write_config(path: Path, seed_dir: Path, base_url: str) -> None:
    cfg = parse_config({
        "select": {"enabled": False},  # scoring has its own resume test
        "decontam": {"enabled": False},
        "seeds": {"source": "directory", "path": str(seed_dir), "max_seeds": SEEDS},
        "llm": {"backend": "openai", "base_url": base_url, "model": "fake",
                "max_in_flight": IN_FLIGHT, "max_retries": 1, "backoff_base_s": 0.01,
                "timeout_s": 10},
        "transform": {"enabled": True, "variants_per_sample": 2},
        "sandbox": {"timeout_s": 10, "workers": 2},
        "ray": {"executor": "ray", "num_cpus": 2, "llm_waves_per_batch": 1,
                "sandbox_batch_size": 4, "cpu_batch_size": 4},
    })
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))


def _start(conf: Path, out: Path, audit: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PIPELINE_SANDBOX_AUDIT": str(audit)}
    with log.open("ab") as f:
        return subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--config", str(conf),
                                 "--output", str(out)], stdout=f, stderr=subprocess.STDOUT,
                                env=env)


def _executions(audit: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in audit.glob("*.log"))


def _run_to_end(conf: Path, out: Path, audit: Path, log: Path) -> None:
    proc = _start(conf, out, audit, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]


def _ray_processes(out: Path) -> list[psutil.Process]:
    from pipeline.config import RayConfig
    from pipeline.executor.ray_executor import RayExecutor

    return processes_naming(RayExecutor(RayConfig(), work_dir=out).temp_dir)


def _rows(path: Path) -> list[dict[str, Any]]:
    ds = datasets.load_from_disk(str(path))
    split = (datasets.concatenate_datasets(list(ds.values()))  # train and validation
             if isinstance(ds, datasets.DatasetDict) else ds)
    rows = split.to_list()
    for r in rows:  # a verdict's wall time is measured, not derived
        if r.get("execution"):
            r["execution"]["duration_s"] = None
    return rows


def test_sigkill_at_random_moments_then_rerun_gives_the_same_dataset(tmp_path: Path) -> None:
    seed_dir = tmp_path / "src"
    seed_dir.mkdir()
    for i in range(SEEDS):
        (seed_dir / f"seed_{i:02d}.py").write_text(_seed_text(i))

    # The uninterrupted run: what every count is compared with.
    ref_model = CountingModel()
    with FakeOpenAIServer(handler=ref_model, latency_s=LATENCY_S) as srv:
        conf = tmp_path / "ref.yaml"
        _write_config(conf, seed_dir, srv.base_url)
        t0 = time.monotonic()
        _run_to_end(conf, tmp_path / "ref", tmp_path / "audit-ref", tmp_path / "ref.log")
        ref_wall = time.monotonic() - t0
    ref_log = (tmp_path / "ref.log").read_text()
    # What a cron log of a Ray run shows: our progress lines, not Ray's plans or workers.
    assert "progress: " in ref_log, ref_log[-3000:]
    assert "Execution plan" not in ref_log and "pid=" not in ref_log, ref_log[-3000:]
    ref_requests, ref_execs = len(ref_model.arrivals), _executions(tmp_path / "audit-ref")
    assert ref_requests == SEEDS and ref_execs > SEEDS

    rng = random.Random(20261203)
    model = CountingModel()
    out, audit, log = tmp_path / "out", tmp_path / "audit", tmp_path / "run.log"
    kills = 0
    with FakeOpenAIServer(handler=model, latency_s=LATENCY_S) as srv:
        conf = tmp_path / "run.yaml"
        _write_config(conf, seed_dir, srv.base_url)
        for n in range(KILLS):
            proc = _start(conf, out, audit, log)
            # The moment: after a random number of new requests (while the LLM stage is at
            # work), of new executions (sandbox stages), or a random time.
            sent, ran = len(model.arrivals), _executions(audit)
            left_requests = ref_requests - sent
            trigger = ("requests" if n == 0 and left_requests > 2 else
                       "executions" if n == 1 else "time")
            want = rng.randint(1, max(1, left_requests - 1)) if trigger == "requests" else \
                rng.randint(1, max(1, ref_execs - ran - 1))
            deadline = time.monotonic() + (rng.uniform(0.2, 0.8) * ref_wall
                                           if trigger == "time" else 300)
            while proc.poll() is None and time.monotonic() < deadline:
                if trigger == "requests" and len(model.arrivals) - sent >= want:
                    break
                if trigger == "executions" and _executions(audit) - ran >= want:
                    break
                time.sleep(0.05)
            if proc.poll() is not None:  # it finished first: nothing to kill this time
                continue
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at = time.monotonic()
            kills += 1
            print(f"kill {kills} ({trigger}, after {want}): {len(model.arrivals)} requests, "
                  f"{_executions(audit)} executions so far")
            gone_by = killed_at + 10
            while _ray_processes(out) and time.monotonic() < gone_by:
                time.sleep(0.2)
            assert _ray_processes(out) == [], "the dead run's Ray instance lives on"
            time.sleep(1.0)
            late = [t for t in model.arrivals if t > killed_at + 1.0]
            assert late == [], f"{len(late)} request(s) reached the server after the kill"
        _run_to_end(conf, out, audit, log)
    assert kills >= 2, "the run finished before most kills: lengthen it"

    assert _rows(out / "dataset") == _rows(tmp_path / "ref" / "dataset")
    assert _rows(out / "rejected") == _rows(tmp_path / "ref" / "rejected")
    assert _rows(out / "dataset"), "nothing kept: the comparison would prove nothing"
    stats = json.loads((out / "stats.json").read_text())
    ref_stats = json.loads((tmp_path / "ref" / "stats.json").read_text())
    assert stats["kept"] == ref_stats["kept"]
    assert stats["rejected_by_reason"] == ref_stats["rejected_by_reason"]

    # Overhead: at most what was in flight at each kill.
    extra_requests = len(model.arrivals) - ref_requests
    extra_execs = _executions(audit) - ref_execs
    print(f"kills {kills}: requests {len(model.arrivals)} vs {ref_requests} uninterrupted, "
          f"executions {_executions(audit)} vs {ref_execs}")
    assert 0 <= extra_requests <= kills * IN_FLIGHT
    # sandbox.workers in flight in each of the two sandbox stages (execute, variant gate)
    assert 0 <= extra_execs <= kills * 2 * 2
