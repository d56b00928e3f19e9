"""Decontamination on real benchmark data: the loaders, each method, the CLI contract.

The embedding tests run the real all-MiniLM-L6-v2 weights from their pinned package; the
execution tests run benchmark tests in the real Docker sandbox.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import SandboxConfig
from pipeline.decontam.benchmarks import load_benchmark, load_humaneval, load_mbpp
from pipeline.decontam.config import BenchmarkSpec, DecontamConfig
from pipeline.decontam.detector import Decontaminator, DecontamRecord
from pipeline.decontam.execution import HITS, probe_entry, probe_program

ROOT = Path(__file__).resolve().parents[1]


def test_builtin_benchmarks_load_every_problem_with_its_tests() -> None:
    he, mb = load_humaneval(), load_mbpp()
    assert len(he) == 164 and len(mb) == 974
    assert {i.task_id for i in mb} == {str(n) for n in range(1, 975)}
    assert all(i.entry_point and i.tests for i in he + mb)
    he0 = he[0]
    assert he0.task_id == "HumanEval/0" and he0.entry_point == "has_close_elements"
    assert he0.instruction.startswith("Check if in given list of numbers")
    assert ">>>" not in he0.instruction  # the statement without its examples
    assert he0.tests.rstrip().endswith("check(has_close_elements)")


def test_probe_program_reports_exactly_the_items_a_function_passes() -> None:
    """The program the execution method runs, in a plain interpreter here (the sandbox
    runs it in the docker tests): a renamed reference solution passes its own item's tests
    and no other item's, and agrees with the reference on the altered inputs."""
    he, mb = load_humaneval(), load_mbpp()
    for item, others in ((he[2], he[:40]), (mb[10], mb[:60])):
        code = item.code.replace(f"def {item.entry_point}(", "def renamed_solution(")
        candidates = [probe_entry(k, it) for k, it in enumerate(others)]
        program = code + "\n" + probe_program("renamed_solution", candidates, 0.5)
        out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        [line] = [x for x in out.splitlines() if x.startswith(HITS)]
        hits = json.loads(line[len(HITS):])
        assert [others[k].task_id for k, _ in hits] == [item.task_id]
        assert hits[0][1] == 1.0  # it agrees with its reference on every altered input


def test_a_benchmark_given_by_path_with_its_field_names(tmp_path: Path) -> None:
    path = tmp_path / "mybench.jsonl"
    path.write_text(json.dumps({"qid": "Q-7", "question": "Reverse the words of a "
                                "sentence while keeping punctuation attached.",
                                "answer": "def f(s):\n    return ' '.join(s.split()[::-1])"})
                    + "\n")
    spec = BenchmarkSpec(name="mybench", path=str(path), id_field="qid",
                         instruction_field="question", code_field="answer")
    [item] = load_benchmark(spec)
    assert (item.benchmark, item.task_id) == ("mybench", "Q-7")
    assert item.code.startswith("def f(s)")
    with pytest.raises(ValueError, match="give exactly one of path"):
        BenchmarkSpec(name="other")
    bad = BenchmarkSpec(name="mybench", path=str(path), instruction_field="prompt",
                        code_field=None)
    with pytest.raises(ValueError, match="set instruction_field/code_field"):
        load_benchmark(bad)


def test_ngram_catches_a_pasted_mbpp_prompt_and_renamed_code() -> None:
    cfg = DecontamConfig(methods=["ngram"])
    det = Decontaminator(cfg)
    mbpp = {i.task_id: i for i in det.items if i.benchmark == "mbpp"}
    item = mbpp["601"]
    pasted = DecontamRecord("a", f"Hi! Homework question, please help: {item.instruction} "
                                 "Thanks a lot in advance.")
    code = item.code.replace(item.entry_point, "solve_it")
    renamed = DecontamRecord("b", "Please tidy this function.", code)
    clean = DecontamRecord("c", "Write a function that parses an ISO 8601 date string and "
                                "returns the weekday name.")
    v = det.check([pasted, renamed, clean])
    assert (v[0].contaminated, v[0].benchmark, v[0].match, v[0].method) == \
        (True, "mbpp", "601", "ngram")
    assert v[1].contaminated and v[1].match == "601"
    assert v[1].evidence["ngram"]["on"] == "code"
    assert not v[2].contaminated and v[2].benchmark is None


@pytest.fixture(scope="module")
def embedding_detector() -> Decontaminator:
    return Decontaminator(DecontamConfig(methods=["embedding"]))


def test_embedding_finds_the_benchmark_item_behind_a_paraphrase(embedding_detector) -> None:
    para = DecontamRecord("p", "Write a function that, given a list of floating point "
                               "numbers and a threshold, reports whether any two of the "
                               "numbers are closer to each other than the threshold.")
    [v] = embedding_detector.check([para])
    ev = v.evidence["embedding"]
    assert (ev["benchmark"], ev["match"]) == ("humaneval", "HumanEval/0")
    assert v.contaminated and v.method == "embedding"


def test_embeddings_are_unit_vectors_and_batch_independent(embedding_detector) -> None:
    emb = embedding_detector.embedder
    texts = ["sort a list", "Write a function to find the n-th Fibonacci number.", "ü ∑ 🙂"]
    together = emb.encode(texts)
    alone = [emb.encode([t])[0] for t in texts]
    for a, b in zip(together, alone, strict=True):
        assert abs(float((a * a).sum()) - 1) < 1e-4
        assert float(abs(a - b).max()) < 1e-4


@pytest.mark.docker
def test_execution_catches_renamed_rewritten_code_no_text_method_sees() -> None:
    from pipeline.decontam.execution import ExecutionChecker, probe_sandbox
    from pipeline.sandbox.pool import SandboxPool

    # HumanEval/23 strlen, rewritten: no shared words, different structure.
    code = "def measure(s):\n    n = 0\n    for _ in s:\n        n += 1\n    return n\n"
    wrong = "def measure(s):\n    return len(s) + 1\n"
    with SandboxPool(probe_sandbox(SandboxConfig())) as pool:
        det = Decontaminator(DecontamConfig(), sandbox=ExecutionChecker(pool))
        hits = det.sandbox.check([(code, []), (wrong, [])], det.items)
        assert [det.items[h].task_id if h is not None else None for h in hits] == \
            ["HumanEval/23", None]
        [v] = det.check([DecontamRecord("x", "Can you add a docstring to this?", code)])
    # MBPP 813 ("find length of the string") is the same problem as HumanEval/23.
    assert v.evidence["execution"]["match"] in ("HumanEval/23", "813")


@pytest.mark.docker
def test_decontaminate_cli_contract(tmp_path: Path) -> None:
    he = load_humaneval()
    rows = [
        {"id": "leak", "instruction": "Return the length of the given string, please.",
         "code": "def size_of(txt):\n    return sum(1 for _ in txt)\n"},
        # (A Roman-numeral task was tried here first: MBPP 961 is exactly that.)
        {"id": "clean", "instruction": "Write a function that parses an HTTP Cache-Control "
                                       "header into a dict of directives with lowercased "
                                       "names, e.g. max-age=60 -> {'max-age': '60'}."},
    ]
    assert he[23].entry_point == "strlen"
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "decontaminate", "--input",
                           str(src), "--output", str(dst)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [r["id"] for r in out] == ["leak", "clean"]
    assert out[0]["contaminated"] and out[0]["benchmark"] in ("humaneval", "mbpp")
    assert out[0]["match"] in ("HumanEval/23", "813")  # the same problem in both
    assert out[0]["method"] in ("execution", "embedding")
    assert isinstance(out[0]["score"], float)
    assert out[1] == {**out[1], "contaminated": False, "benchmark": None, "match": None,
                      "method": None, "score": None}


def test_decontaminate_cli_names_a_bad_record(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "instruction": 5}\n')
    proc = subprocess.run([sys.executable, "-m", "pipeline", "decontaminate", "--input",
                           str(src), "--output", str(tmp_path / "o.jsonl")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "record 1: a record needs a string 'instruction'" in proc.stderr


def test_differential_check_separates_a_coincidence_from_the_same_function() -> None:
    """A function that passes a weak benchmark's asserts by coincidence disagrees with the
    reference once the inputs are altered; the same function written otherwise agrees."""
    import importlib

    rt = importlib.import_module("pipeline.decontam.probe_runtime")

    def reference(s):  # MBPP 477 style: lower-case a string
        return s.lower()

    def slugify(s):  # another problem that passes "InValid" -> "invalid"
        return "-".join(w for w in "".join(c if c.isalnum() else " " for c in s.lower())
                        .split())

    def lowered(s):
        return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)

    calls = [("InValid",), ("TruE",), ("SenTenCE",)]
    assert all(slugify(*c) == reference(*c) for c in calls)
    assert rt.agreement(reference, slugify, calls, 0.5) < 0.8
    assert rt.agreement(reference, lowered, calls, 0.5) == 1.0


def test_bad_decontam_config_names_the_field_and_the_fix() -> None:
    from pipeline.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"decontam\.methods\.1: Input should be 'ngram', "
                                          r"'embedding' or 'execution'"):
        parse_config({"decontam": {"methods": ["ngram", "fuzzy"]}})
    with pytest.raises(ConfigError, match="decontam.methods is empty"):
        parse_config({"decontam": {"methods": []}})
    with pytest.raises(ConfigError, match="give exactly one of path"):
        parse_config({"decontam": {"benchmarks": [{"name": "mine"}]}})
    with pytest.raises(ConfigError, match=r"dedup\.minhash_threshold"):
        parse_config({"dedup": {"minhash_threshold": 1.5}})
