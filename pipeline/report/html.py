"""`write_report`: OUT/report.html, one self-contained page of a run's output.

The page is rendered from `report.html.jinja2` (next to this module): the figures as HTML
tables, the charts as inline SVG, and the sample browser as plain inline JavaScript over
the sampled records, inline JSON. Nothing is loaded from the network, so the file can be
mailed or opened on a machine without access.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jinja2

from pipeline.report.charts import render_charts
from pipeline.report.columns import read_columns, read_stats
from pipeline.report.records import fit, sample_records
from pipeline.report.summary import build_summary
from pipeline.report.text import NA, fmt

TEMPLATE = "report.html.jinja2"
#: The page's size bound; the records get what the rest leaves.
MAX_BYTES = 2_000_000
#: Bytes held back for the page around the records' JSON (tables, charts, script).
_PAGE_RESERVE = 600_000


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    return env


def script_json(data: Any) -> str:
    """JSON safe inside a <script> element: no `</script>` or `<!--` can end it early."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029",
                                                                                "\\u2029")


def render_report(out_dir: Path, records_per_side: int = 150) -> str:
    """The report page of the run in `out_dir`, as HTML text of at most MAX_BYTES."""
    stats = read_stats(out_dir)
    cols = read_columns(out_dir)
    summary = build_summary(stats, cols)
    charts = render_charts(summary)
    budget = MAX_BYTES - _PAGE_RESERVE - sum(len(c.encode()) for c in charts.values())
    records = sample_records(cols, records_per_side, records_per_side,
                             budget=max(budget, 100_000))
    template = _env().get_template(TEMPLATE)
    context = {"out_dir": str(out_dir), "summary": summary, "charts": charts, "NA": NA,
               "strategy_counts": _strategy_counts(stats, summary),
               "built": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    while True:
        html = template.render(**context, records_json=script_json(records),
                               n_records=len(records))
        over = len(html.encode()) - MAX_BYTES
        if over <= 0 or not records:
            return html
        # The page around the records came out larger than reserved: give them less.
        size = len(script_json(records).encode())
        records = fit(records, max(0, size - over - 10_000))


def _strategy_counts(stats: dict[str, Any], summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per strategy: source samples, kept and rejected rows."""
    sources = stats.get("sources") or {}
    kept = stats.get("kept_by_strategy") or {}
    drops = summary["drops"]["rows"]
    names = list(dict.fromkeys([*sources, *kept, *drops]))
    return [{"name": n, "sources": sources.get(n), "kept": int(kept.get(n, 0)),
             "rejected": sum(drops.get(n, {}).values())} for n in names]


def write_report(out_dir: Path) -> Path:
    """Write `out_dir/report.html` (self-contained, at most about 2 MB) for the run
    written to `out_dir`; returns its path."""
    out_dir = Path(out_dir)
    html = render_report(out_dir)
    dest = out_dir / "report.html"
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(dest)
    return dest
