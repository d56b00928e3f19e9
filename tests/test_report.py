"""The run report (pipeline/report): the summary of a hand-made output written by
`pipeline.output.write_outputs` (the real layout), and of a real run (fake OpenAI server,
Docker sandbox): the page shows the run's counts, stays small and self-contained, and
shows a bounded sample of records."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.output import write_outputs
from pipeline.record import ExecStatus, Execution, RejectReason, Sample
from pipeline.report import summary_lines, write_report
from pipeline.report.columns import read_columns, read_stats
from pipeline.report.html import MAX_BYTES, script_json
from pipeline.report.records import choose, cut, fit, id_hashes, quotas, sample_records
from pipeline.report.summary import build_summary

STRATEGIES = ("oss_instruct", "self_instruct")
STAGE_ORDER = ["oss_instruct", "self_instruct", "execute", "dedup", "transform",
               "variant_gate", "score", "select"]
#: Code that must never end the page's script element early.
HOSTILE = 'x = "</script><script>alert(1)</script><!--"'


def _sample(strategy: str, i: int, **kw: Any) -> Sample:
    s = Sample(strategy=strategy, seed_ref=f"seeds/{strategy}_{i % 7}.py:1-9",
               parent_id=f"seed-{strategy}-{i}", instruction=f"Task {i} of {strategy}: add.",
               code=f"def add_{i}(a, b):\n    return a + b\n",
               tests=f"assert add_{i}(1, 2) == 3\n", response="```python\n...\n```",
               model="fake", **kw)
    s.assign_id()
    return s


def _passed(s: Sample, seconds: float) -> Sample:
    s.execution = Execution(ExecStatus.PASSED, duration_s=seconds, tests_passed=1,
                            tests_total=1)
    return s


def make_output(out: Path, n: int = 40, variants: bool = False,
                long_code: bool = False) -> dict[str, Any]:
    """A run output of `n` samples per strategy: per strategy, i % 10 == 0 unparseable,
    == 1 failing its tests, == 2 or 3 not selected (loss 0.1 + i/1000), the rest kept
    (loss 1 + i/1000); with `variants`, a kept refactor variant of every kept sample."""
    samples: list[Sample] = []
    for strategy in STRATEGIES:
        for i in range(n):
            s = _sample(strategy, i)
            if long_code and i == 4:
                s.code = HOSTILE + "\n" + "y = 1\n" * 5000
                s.assign_id()
            r = i % 10
            if r == 0:
                samples.append(s.reject(strategy, RejectReason.UNPARSEABLE, "prose only"))
                continue
            _passed(s, 0.01 * (1 + i % 5))
            if r == 1:
                s.execution = Execution(ExecStatus.FAILED, 0.5, 0, 1, stderr="AssertionError")
                samples.append(s.reject("execute", RejectReason.EXEC_FAILED,
                                        f"AssertionError: add_{i}(1, 2) returned -1"))
                continue
            loss = (0.1 if r in (2, 3) else 1.0) + i / 1000
            s.scores = {"loss": loss, "ifd": loss / 2, "loss_alone": 2.0,
                        "response_tokens": 10}
            if r in (2, 3):
                s.reject("select", RejectReason.NOT_SELECTED, "below the cut")
            elif variants:
                v = _sample(strategy, i, kind="refactor", op="rename_function", round=1)
                v.parent_id = s.id
                v.assign_id()
                v.scores = dict(s.scores)
                samples.append(_passed(v, 0.02))
            samples.append(s)
    per = {"generated": n, "parsed": n - n // 10, "novel": n - n // 10}
    created = sum(1 for s in samples if s.kind)
    executed = 2 * (n - n // 10)
    passed = executed - 2 * (n // 10)
    scored = passed + created
    selected = scored - 2 * (2 * n // 10)
    stages = {name: {"in": passed, "out": passed, "seconds": 1.5} for name in STAGE_ORDER}
    for name in STRATEGIES:
        stages[name].update({"in": n, "out": n - n // 10, "dropped_unparseable": n // 10})
    stages["oss_instruct"].update(prompt_tokens=1000, completion_tokens=500, seconds=2.0)
    stages["execute"].update({"in": executed, "out": passed,
                              "dropped_exec_failed": 2 * (n // 10)})
    stages["transform"].update({"created": created, "in": scored, "out": scored})
    stages["variant_gate"].update({"in": created, "out": created})
    stages["score"].update({"in": scored, "out": scored, "scored": scored,
                            "scored_tokens": 10 * scored})
    stages["select"].update({"in": scored, "out": selected,
                             "dropped_not_selected": scored - selected})
    stats = {"seeds": 2 * n, "model": "fake", "backend": "openai", "executor": "local",
             "stage_order": STAGE_ORDER, "stages": stages,
             "sources": {s: n for s in STRATEGIES}}
    stats = write_outputs(out, samples, stats)
    stats["by_strategy"] = {s: {**per, "verified": stats["kept_by_strategy"].get(s, 0)}
                            for s in STRATEGIES}
    stats["wall_time_s"] = 12.5
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def records_of(html: str) -> list[dict[str, Any]]:
    m = re.search(r'<script type="application/json" id="records-data">(.*?)</script>', html,
                  re.S)
    assert m, "no records-data script in the page"
    return json.loads(m.group(1))


def counts_of(html: str) -> dict[str, str]:
    """The counts cards: data-count name -> the text shown."""
    return dict(re.findall(r'<div class="v" data-count="(\w+)">([^<]*)</div>', html))


def check_page(out: Path, stats: dict[str, Any]) -> str:
    """write_report's page shows the run's counts, is small and self-contained."""
    path = write_report(out)
    assert path == out / "report.html"
    html = path.read_text(encoding="utf-8")
    assert path.stat().st_size <= MAX_BYTES
    shown = counts_of(html)
    assert shown["kept"] == f"{stats['kept']:,}" and shown["rejected"] == f"{stats['rejected']:,}"
    assert shown["seeds"] == f"{stats['seeds']:,}"
    for name, kept in stats["kept_by_strategy"].items():
        row = re.search(rf'<tr data-strategy="{name}"><td>{name}</td><td>[^<]*</td>\s*'
                        r'<td data-count="kept">([^<]*)</td>', html)
        assert row and row.group(1) == f"{kept:,}", name
    # nothing from the network: no src/href to http(s), no external script or style
    assert not re.search(r'(?:src|href)\s*=\s*["\']?(?:https?:)?//', html, re.I)
    assert "<link" not in html and not re.search(r"<script[^>]+src=", html)
    recs = records_of(html)
    assert 0 < len(recs) <= 300
    assert sum(r["kept"] for r in recs) <= 150 and sum(not r["kept"] for r in recs) <= 150
    return html


def test_summary_of_a_handmade_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = make_output(out)
    cols = read_columns(out)
    assert len(cols) == stats["kept"] + stats["rejected"] == 80
    s = build_summary(read_stats(out), cols)
    f = s["funnel"]
    assert f["rows_exact"]  # no stage after execute created samples
    oss = f["rows"]["oss_instruct"]
    # 40 generated, 36 parsed; 4 unparseable never reached execute, 4 failed there
    assert (oss["generated"], oss["parsed"], oss["novel"]) == (40, 36, 36)
    assert (oss["executed"], oss["passed"], oss["kept"]) == (36, 32, 24)
    assert oss["selected"] == 24 and oss["decontaminated"] is None  # no decontam stage
    assert f["run"]["executed"] == 72 and f["run"]["decontaminated"] is None
    assert {(r["stage"], r["reason"]): r["count"] for r in s["reasons"]} == {
        ("select", "not_selected"): 16, ("execute", "exec_failed"): 8,
        ("oss_instruct", "unparseable"): 4, ("self_instruct", "unparseable"): 4}
    assert s["drops"]["rows"]["self_instruct"] == {"self_instruct": 4, "execute": 4,
                                                    "select": 8}
    kept_loss = [1 + i / 1000 for i in range(40) if i % 10 > 3] * 2
    dropped_loss = [0.1 + i / 1000 for i in range(40) if i % 10 in (2, 3)] * 2
    assert s["loss"]["kept"]["mean"] == pytest.approx(np.mean(kept_loss))
    assert s["loss"]["dropped"]["median"] == pytest.approx(np.median(dropped_loss))
    assert s["ifd"]["dropped"]["n"] == 16
    assert sum(s["loss"]["hist"]["counts"]["kept"]) == 48
    assert s["execution"]["by_status"] == {"passed": 64, "failed": 8}
    oss_stage = next(st for st in s["stages"] if st["name"] == "oss_instruct")
    assert oss_stage["tokens_per_s"] == pytest.approx(750.0)


def test_per_strategy_steps_are_na_when_samples_are_created_after_execute(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = make_output(out, variants=True)
    s = build_summary(stats, read_columns(out))
    oss = s["funnel"]["rows"]["oss_instruct"]
    assert oss["executed"] is None and oss["passed"] is None and oss["kept"] == 48
    assert s["funnel"]["run"]["transformed"] == 48
    assert s["kept_by_kind"]["oss_instruct"] == {"original": 24, "refactor": 24}


def test_summary_lines_print_counts_funnel_and_loss(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_output(out)
    lines = summary_lines(out)
    text = "\n".join(lines)
    assert "seeds 80  kept 48  rejected 32" in text
    assert re.search(r"^  oss_instruct\s+40\s+36\s+36\s+36\s+32\s+n/a\s+", text, re.M)
    assert "loss: kept vs not selected" in text
    kept = next(line for line in lines[lines.index("loss: kept vs not selected"):]
                if line.strip().startswith("kept"))
    mean = np.mean([1 + i / 1000 for i in range(40) if i % 10 > 3])
    assert kept.split()[1:3] == ["48", f"{mean:.4g}"]
    assert "select/not_selected" in text and "execution time (s) of 72 samples" in text


def test_unscored_run_says_so(tmp_path: Path) -> None:
    out = tmp_path / "out"
    samples = [_passed(_sample("oss_instruct", i), 0.1) for i in range(3)]
    stats = write_outputs(out, samples, {"seeds": 3, "stage_order": ["oss_instruct", "execute"],
                                         "stages": {}})
    text = "\n".join(summary_lines(out))
    assert "loss" not in text and "kept 3" in text
    html = check_page(out, stats)
    assert "This run did not score samples" in html


def test_records_are_bounded_spread_and_deterministic(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_output(out, n=400, variants=True)
    cols = read_columns(out)
    recs = sample_records(cols, kept=30, rejected=12)
    kept = [r for r in recs if r["kept"]]
    rejected = [r for r in recs if not r["kept"]]
    assert len(kept) == 30 and len(rejected) == 12
    assert {r["strategy"] for r in kept} == set(STRATEGIES)
    # 6 groups of rejected (2 strategies x 3 stage/reason): 2 records from each
    groups: dict[tuple[str, str], int] = {}
    for r in rejected:
        groups[(r["strategy"], r["fate"])] = groups.get((r["strategy"], r["fate"]), 0) + 1
    assert sorted(groups.values()) == [2] * 6
    assert [r["id"] for r in sample_records(read_columns(out), 30, 12)] == [r["id"] for r in recs]
    # lineage both ways: a variant names its parent, an original lists its variants
    by_parent = [r for r in recs if r["parent"]]
    with_children = [r for r in recs if r["children"]]
    assert by_parent and with_children
    v = by_parent[0]
    assert v["kind"] == "refactor" and v["parent"]["id"] == v["parent_id"]
    o = with_children[0]
    assert o["children_total"] == 1 and o["children"][0]["kind"] == "refactor"
    assert all(r["seed_ref"] for r in recs)


def test_quotas_share_the_budget() -> None:
    assert quotas(np.array([1, 100, 100]), 10).tolist() == [1, 5, 4]
    assert quotas(np.array([3, 2]), 10).tolist() == [3, 2]
    assert quotas(np.array([50, 50, 50]), 7).sum() == 7
    assert quotas(np.array([], np.int64), 5).tolist() == []


def test_hashes_do_not_follow_the_ids() -> None:
    import pyarrow as pa

    ids = [f"{i:016x}" for i in range(2000)]
    h = id_hashes(pa.chunked_array([pa.array(ids)]))
    assert len(set(h.tolist())) == 2000
    first = np.argsort(h)[:100]
    assert first.mean() > 500  # smallest hashes are not the smallest ids
    long = id_hashes(pa.chunked_array([pa.array(["a" * 200, "a" * 199 + "b"])]))
    assert long[0] != long[1]


def test_long_texts_are_cut_and_the_json_fits_its_budget(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_output(out, long_code=True)
    recs = sample_records(read_columns(out), budget=10**6)
    big = [r for r in recs if "more characters]" in r["code"]]
    assert big and len(big[0]["code"]) < 3200
    many = [dict(big[0], id=str(i)) for i in range(300)]
    fitted = fit(many, 200_000)
    assert len(json.dumps(fitted, ensure_ascii=False).encode()) <= 200_000
    assert cut("abc", 5) == "abc" and cut("abcdef", 2).startswith("ab\n… [4 more")


def test_page_is_self_contained_and_script_safe(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = make_output(out, long_code=True)
    html = check_page(out, stats)
    assert "alert(1)" not in html.split('id="records-data">')[0]
    assert "</script><script>alert" not in html
    assert any(HOSTILE in r["code"] for r in records_of(html))  # intact once parsed
    assert json.loads(script_json({"a": "</script>"})) == {"a": "</script>"}
    assert html.count("<svg") >= 4  # funnel, reasons, loss, ifd, execution, stages
    # the records are drawn by the script: no record row in the served HTML itself
    assert 'data-id="' not in html


def test_page_keeps_its_size_bound_when_the_page_outgrows_its_reserve(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.report.html as page

    out = tmp_path / "out"
    make_output(out, n=200, variants=True, long_code=True)
    monkeypatch.setattr(page, "MAX_BYTES", 150_000)
    monkeypatch.setattr(page, "_PAGE_RESERVE", 0)  # the records would get too much
    html = page.render_report(out)
    assert len(html.encode()) <= 150_000
    recs = records_of(html)
    assert len(recs) > 20 and {r["kept"] for r in recs} == {True, False}


def test_missing_output_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not the output of a finished run"):
        summary_lines(tmp_path)


def test_choose_is_empty_for_an_empty_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = write_outputs(out, [], {"seeds": 0, "stages": {}})
    assert choose(read_columns(out)) == []
    page = write_report(out).read_text()
    assert counts_of(page)["kept"] == "0" == f"{stats['kept']}" and records_of(page) == []
    assert "kept 0  rejected 0" in "\n".join(summary_lines(out))


# --- a real run ---------------------------------------------------------------------------

@pytest.mark.docker
def test_report_of_a_real_run(tmp_path: Path) -> None:
    from pipeline.run import run_pipeline
    from tests.fake_openai_server import FakeOpenAIServer
    from tests.test_run_e2e import _config, model, write_seeds

    seed_dir = write_seeds(tmp_path / "src")
    out = tmp_path / "out"
    with FakeOpenAIServer(handler=model) as srv:
        cfg = _config(seed_dir, srv.base_url, "local")
        cfg = cfg.model_copy(update={"transform": cfg.transform.model_copy(
            update={"enabled": True})})
        stats = run_pipeline(cfg, out)
    assert stats["kept"] >= 2 and stats["rejected"] >= 2
    assert (out / "report.html").is_file()  # the run wrote it
    html = check_page(out, stats)
    recs = records_of(html)
    assert len(recs) == stats["kept"] + stats["rejected"]  # a small run: every row shown
    fates = {r["fate"] for r in recs}
    assert {"kept", "execute/exec_failed", "oss_instruct/unparseable"} <= fates
    failed = next(r for r in recs if r["fate"] == "execute/exec_failed")
    assert failed["execution"]["status"] == "failed" and failed["detail"]
    assert failed["code"] and failed["tests"]
    variants = [r for r in recs if r.get("kind")]
    assert variants and all(r["parent"] for r in variants)  # lineage into the output
    # Per strategy, the funnel is the stages' own per-strategy counters, transforms and all.
    f = build_summary(stats, read_columns(out))["funnel"]
    ex, tf = stats["stages"]["execute"], stats["stages"]["transform"]
    assert f["rows"]["oss_instruct"]["executed"] == ex["oss_instruct:received"] == ex["in"]
    assert f["rows"]["oss_instruct"]["passed"] == ex["oss_instruct:out"] == ex["out"]
    assert f["rows"]["oss_instruct"]["transformed"] == tf["oss_instruct:created"] > 0
    lines = summary_lines(out)
    text = "\n".join(lines)
    assert f"seeds {stats['seeds']}  kept {stats['kept']}  rejected {stats['rejected']}" in text
    row = next(line for line in lines if line.startswith("  oss_instruct"))
    by = stats["by_strategy"]["oss_instruct"]
    assert row.split()[1:4] == [str(by["generated"]), str(by["parsed"]), str(by["novel"])]
    for key, n in stats["rejected_by_reason"].items():
        assert re.search(rf"^  {re.escape(key)}\s+{n}$", text, re.M)
    assert "loss: kept" not in text  # select was off: nothing scored
    cli = subprocess.run([sys.executable, "-m", "pipeline", "inspect", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert cli.stdout.splitlines() == lines
