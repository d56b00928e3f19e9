"""Sandbox throughput: the same programs run three ways, in executions per second.

(a) our Docker sandbox: warm containers, a runner forking per sample (SandboxPool);
(b) plain subprocesses, no isolation: a fresh `python` per program, on all cores;
(c) one `docker run` per sample with the same isolation flags, one after another
    (a subset, --docker-run-n, since each costs most of a second);
(d) with --process: the warm pool on backend=process (bubblewrap), for comparison.

Programs come from MBPP (sanitized): reference solution + its asserts (passing), the
solution with its function replaced by one returning None (failing), and a few with
`while True: pass` (timing out at --timeout-s).

    python benchmarks/sandbox.py [-n 500] [--timeout-s 1] [--docker-run-n 50] [--process]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import SandboxConfig  # noqa: E402
from pipeline.sandbox import SandboxPool  # noqa: E402
from pipeline.sandbox.docker_backend import SANDBOX_ENV  # noqa: E402

MBPP = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mbpp-sanitized.jsonl"


def _entry_point(code: str, tests: list[str]) -> str | None:
    """The solution function the asserts call."""
    defined = {n.name for n in ast.walk(ast.parse(code)) if isinstance(n, ast.FunctionDef)}
    for t in tests:
        for node in ast.walk(ast.parse(t)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in defined:
                return node.func.id
    return None


def make_programs(n: int, n_timeouts: int, seed: int = 0) -> list[dict]:
    """n programs {id, code, tests, expect}: about 2/3 passing, 1/3 failing, n_timeouts loops."""
    rows = [json.loads(line) for line in MBPP.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    progs: list[dict] = []
    i = 0
    while len(progs) < n:
        row = rows[i % len(rows)]
        i += 1
        # Some MBPP asserts use math.isclose without importing math (harnesses import it).
        tests = "\n".join(filter(None, ["import math", row.get("test_setup_code", "")]
                                  + row["test_list"]))
        fn = _entry_point(row["code"], row["test_list"])
        k = len(progs)
        if k < n_timeouts:
            code, expect = row["code"] + "\nwhile True:\n    pass\n", "timeout"
        elif fn is not None and rng.random() < 1 / 3:
            code = row["code"] + f"\n\ndef {fn}(*args, **kwargs):\n    return None\n"
            expect = "failed"
        else:
            code, expect = row["code"], "passed"
        progs.append({"id": f"{row['task_id']}-{k}", "code": code, "tests": tests,
                      "expect": expect})
    rng.shuffle(progs)
    return progs


def run_sandbox(progs: list[dict], cfg: SandboxConfig) -> tuple[list[dict], float, float]:
    t0 = time.perf_counter()
    with SandboxPool(cfg) as pool:
        t1 = time.perf_counter()
        res = pool.run_many((p["id"], p["code"], p["tests"]) for p in progs)
        t2 = time.perf_counter()
    return res, t2 - t1, t1 - t0


def _subprocess_one(p: dict, timeout: float, tmp: str, python: str) -> str:
    path = os.path.join(tmp, f"{p['id']}.py")
    with open(path, "w") as f:
        f.write(p["code"] + "\n\n" + p["tests"] + "\n")
    try:
        r = subprocess.run([python, path], capture_output=True, timeout=timeout,
                           cwd=tmp)
    except subprocess.TimeoutExpired:
        return "timeout"
    return "passed" if r.returncode == 0 else "failed"


def run_subprocesses(progs: list[dict], timeout: float, python: str) -> tuple[list[str], float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(os.cpu_count() or 1) as ex:
            out = list(ex.map(lambda p: _subprocess_one(p, timeout, tmp, python), progs))
        return out, time.perf_counter() - t0


def _docker_run_one(p: dict, cfg: SandboxConfig) -> str:
    env = [x for k, v in SANDBOX_ENV.items() for x in ("-e", f"{k}={v}")]
    mem = f"{cfg.memory_mb + 128}m"
    cmd = ["docker", "run", "--rm", "-i", "--network", "none", "--read-only",
           "--tmpfs", f"/tmp:rw,size={cfg.tmpfs_mb}m,mode=1777", "--memory", mem,
           "--memory-swap", mem, "--cpus", str(cfg.cpus), "--pids-limit", str(cfg.pids_limit),
           "--user", "10001:10001", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
           *env, cfg.image, "timeout", "-s", "KILL", str(cfg.timeout_s), "python3", "-"]
    r = subprocess.run(cmd, input=(p["code"] + "\n\n" + p["tests"] + "\n").encode(),
                       capture_output=True)
    if r.returncode == 137:
        return "timeout"
    return "passed" if r.returncode == 0 else "failed"


def run_docker_per_sample(progs: list[dict], cfg: SandboxConfig) -> tuple[list[str], float]:
    t0 = time.perf_counter()
    out = [_docker_run_one(p, cfg) for p in progs]
    return out, time.perf_counter() - t0


def _agreement(name: str, got: list[str], progs: list[dict]) -> str:
    c = Counter(got)
    wrong = sum(g != p["expect"] for g, p in zip(got, progs, strict=True))
    return f"{name}: {dict(sorted(c.items()))}, {wrong} differ from the expected verdict"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=500, help="programs for (a) and (b)")
    ap.add_argument("--timeouts", type=int, default=8, help="programs that loop forever")
    ap.add_argument("--timeout-s", type=float, default=1.0, help="per-program timeout")
    ap.add_argument("--docker-run-n", type=int, default=50, help="programs for (c)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for (b); "
                    "default: this one")
    ap.add_argument("--workers", type=int, default=None, help="sandbox containers "
                    "(default: sandbox.workers)")
    ap.add_argument("--process", action="store_true", help="also time (d), the warm pool "
                    "on backend=process")
    args = ap.parse_args()

    progs = make_programs(args.n, args.timeouts)
    kw = {"timeout_s": args.timeout_s} | ({"workers": args.workers} if args.workers else {})
    cfg = SandboxConfig(**kw)
    print(f"{len(progs)} programs: {dict(Counter(p['expect'] for p in progs))}; "
          f"timeout {cfg.timeout_s:g} s; {os.cpu_count()} cores; sandbox workers {cfg.workers}")

    a_res, a_s, a_start = run_sandbox(progs, cfg)
    a_status = [r["status"] for r in a_res]
    print(_agreement("(a) sandbox", a_status, progs))
    t_out = [r["duration_s"] for r in a_res if r["status"] == "timeout"]
    rest = [r["duration_s"] for r in a_res if r["status"] != "timeout"]
    print(f"    (a) time per timed-out sample {sum(t_out) / max(len(t_out), 1):.2f} s (the "
          f"run-queue wait is not charged, up to 3x timeout), per other sample "
          f"{1000 * sum(rest) / max(len(rest), 1):.1f} ms")
    b_status, b_s = run_subprocesses(progs, cfg.timeout_s, args.python)
    print(_agreement("(b) subprocess", b_status, progs))
    # (c): the same mix in miniature: the first docker-run-n programs in shuffled order.
    sub = progs[:args.docker_run_n]
    c_status, c_s = run_docker_per_sample(sub, cfg)
    print(_agreement(f"(c) docker run, first {len(sub)}", c_status, sub))

    d_line = ""
    if args.process:
        d_res, d_s, d_start = run_sandbox(progs, cfg.model_copy(update={"backend": "process"}))
        print(_agreement("(d) process backend", [r["status"] for r in d_res], progs))
        d_line = (f"(d) process backend, warm pool:   {len(progs) / d_s:8.1f} exec/s  "
                  f"({len(progs)} in {d_s:.1f} s; pool start {d_start:.1f} s not counted)")

    a, b, c = len(progs) / a_s, len(progs) / b_s, len(sub) / c_s
    print()
    print(f"(a) Docker sandbox, warm pool:     {a:8.1f} exec/s  ({len(progs)} in {a_s:.1f} s; "
          f"pool start {a_start:.1f} s not counted)")
    print(f"(b) plain subprocess, all cores:   {b:8.1f} exec/s  ({len(progs)} in {b_s:.1f} s; "
          f"{args.python})")
    print(f"(c) docker run per sample, serial: {c:8.1f} exec/s  ({len(sub)} of them, "
          f"in {c_s:.1f} s)")
    if d_line:
        print(d_line)
    print(f"(a)/(b) = {a / b:.2f}   (target >= 0.5)")
    print(f"(a)/(c) = {a / c:.1f}   (target >= 10)")


if __name__ == "__main__":
    main()
