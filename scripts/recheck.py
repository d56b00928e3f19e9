"""Re-run every row of a finished run's dataset through `python -m pipeline sandbox`.

Prints one verdict per row and a summary; exits 1 unless every row passes again.
Usage: .venv/bin/python scripts/recheck.py runs/default
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys

import datasets


def main(run_dir: str) -> int:
    rows = datasets.concatenate_datasets(  # every split: train and validation
        list(datasets.load_from_disk(f"{run_dir}/dataset").values()))
    records = "".join(json.dumps({"id": r["id"], "code": r["code"], "tests": r["tests"],
                                   "language": r.get("language") or "python"}) + "\n"
                      for r in rows)
    proc = subprocess.run([sys.executable, "-m", "pipeline", "sandbox", "--input", "-",
                           "--output", "-"], input=records, capture_output=True, text=True,
                          check=True)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    for r in results:
        print(r["id"], r["status"], f"{r['tests_passed']}/{r['tests_total']}")
    counts = collections.Counter(r["status"] for r in results)
    print(f"{len(results)} rows re-run through `python -m pipeline sandbox`: "
          + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 0 if results and counts["passed"] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
