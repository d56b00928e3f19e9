"""The report page in headless Chromium: after its inline scripts ran, the DOM shows the
run's counts and the sample browser's records, clicking and filtering work, and the
console stays clean (the detection itself is checked on a page with a deliberate error).
A screenshot is left at /tmp/report.png."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.report import write_report
from tests.test_report import counts_of, make_output, records_of

pytestmark = pytest.mark.browser

SCREENSHOT = Path("/tmp/report.png")
#: A console message in Chromium's log (INFO:CONSOLE:12] or, older, INFO:CONSOLE(12)]).
_CONSOLE = re.compile(r"^.*:CONSOLE[:(]\d+\)?\].*$", re.M)
_ROW = re.compile(r'<tr class="rec(?: current)?" data-id="([^"]+)">')


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with console logging on stderr, its profile under `tmp`."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe is not None
    cmd = [exe, "--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
           "--disable-extensions", "--enable-logging=stderr", "--v=0",
           f"--user-data-dir={tmp / 'profile'}", *args]
    if os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def render(tmp: Path, page: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and the console messages it logged."""
    r = chromium(tmp, "--dump-dom", page.as_uri())
    return r.stdout, _CONSOLE.findall(r.stderr)


def with_script(page: Path, script: str, name: str) -> Path:
    """A copy of `page` with `script` run after the page's own."""
    html = page.read_text(encoding="utf-8")
    dest = page.with_name(name)
    dest.write_text(html.replace("</body>", f"<script>{script}</script>\n</body>"),
                    encoding="utf-8")
    return dest


def detail_of(dom: str) -> str:
    m = re.search(r'<div id="record-detail">(.*?)</div>\s*</div>\s*</section>', dom, re.S)
    assert m, "no record detail in the DOM"
    return m.group(1)


def check_dom(dom: str, stats: dict[str, Any], records: list[dict[str, Any]]) -> None:
    shown = counts_of(dom)
    assert shown["kept"] == f"{stats['kept']:,}" and shown["rejected"] == f"{stats['rejected']:,}"
    assert shown["seeds"] == f"{stats['seeds']:,}"
    for name in stats["kept_by_strategy"]:
        assert f'<tr data-strategy="{name}"><td>{name}</td>' in dom
    assert _ROW.findall(dom) == [r["id"] for r in records]  # every record, drawn by the script
    assert f"{len(records)} of {len(records)} records" in dom
    first = detail_of(dom)
    assert records[0]["id"] in first
    for heading in ("Lineage", "Instruction", "Code", "Tests", "Test output"):
        assert f"<h3>{heading}</h3>" in first


def test_console_detection_catches_a_script_error(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><p id='p'>x</p><script>"
                    "document.getElementById('p').textContent = 'ran';"
                    "notDefinedAnywhere();</script></body></html>")
    dom, console = render(tmp_path, page)
    assert "ran" in dom
    assert any("Uncaught ReferenceError: notDefinedAnywhere" in line for line in console), console


def test_report_renders_counts_records_and_a_clean_console(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = make_output(out, n=60, variants=True, long_code=True)
    page = write_report(out)
    records = records_of(page.read_text(encoding="utf-8"))
    dom, console = render(tmp_path, page)
    assert console == []
    check_dom(dom, stats, records)
    first = detail_of(dom)
    assert "seed " + records[0]["seed_ref"] in first

    # clicking a record shows it, with its lineage (a variant links its parent)
    variant = next(i for i, r in enumerate(records) if r["parent"])
    clicked = with_script(page, f"document.querySelectorAll('tr.rec')[{variant}].click();",
                          "clicked.html")
    dom, console = render(tmp_path, clicked)
    assert console == []
    rec = records[variant]
    detail = detail_of(dom)
    assert rec["id"] in detail and rec["parent"]["id"] in detail and "refactor" in detail
    assert re.search(rf'<tr class="rec current" data-id="{rec["id"]}">', dom)

    # filtering by reason keeps only those records and shows the first of them
    failed = [r for r in records if r.get("reason") == "exec_failed"]
    assert failed
    filtered = with_script(page, "var s = document.getElementById('f-reason');"
                                 "s.value = 'exec_failed';"
                                 "s.dispatchEvent(new Event('change'));", "filtered.html")
    dom, console = render(tmp_path, filtered)
    assert console == []
    assert _ROW.findall(dom) == [r["id"] for r in failed]
    assert f"{len(failed)} of {len(records)} records" in dom
    detail = detail_of(dom)
    assert failed[0]["id"] in detail and "AssertionError" in detail  # the test output

    SCREENSHOT.unlink(missing_ok=True)
    chromium(tmp_path, f"--screenshot={SCREENSHOT}", "--window-size=1280,2000",
             "--hide-scrollbars", page.as_uri())
    assert SCREENSHOT.stat().st_size > 10_000


@pytest.mark.docker
def test_report_of_a_real_run_in_the_browser(tmp_path: Path) -> None:
    from pipeline.run import run_pipeline
    from tests.fake_openai_server import FakeOpenAIServer
    from tests.test_run_e2e import _config, model, write_seeds

    seed_dir = write_seeds(tmp_path / "src")
    out = tmp_path / "out"
    with FakeOpenAIServer(handler=model) as srv:
        stats = run_pipeline(_config(seed_dir, srv.base_url, "local"), out)
    page = write_report(out)
    records = records_of(page.read_text(encoding="utf-8"))
    dom, console = render(tmp_path, page)
    assert console == []
    check_dom(dom, stats, records)
    assert len(records) == stats["kept"] + stats["rejected"]
