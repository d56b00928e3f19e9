"""The report's charts: matplotlib figures as inline SVG (text kept as text, so a chart is
a few kilobytes and the page needs no font or network)."""

from __future__ import annotations

import io
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "pipeline-report", "font.size": 9,
          "axes.spines.top": False, "axes.spines.right": False,
          "font.family": ["DejaVu Sans", "sans-serif"]}
KEPT, DROPPED, OTHER = "#2a7ab0", "#d9822b", "#6b8e23"
_WIDTH = 6.4
_LABELS = {"dropped": "not selected"}
#: Every chart the page has a place for.
CHARTS = ("funnel", "reasons", "loss", "ifd", "execution", "stages")


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # no XML prolog or doctype inside HTML
    return re.sub(r"\n\s*", "\n", text)


def _barh(labels: list[str], values: list[float], title: str, xlabel: str,
          color: str = DROPPED) -> str:
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(_WIDTH, 0.8 + 0.24 * len(labels)))
        y = range(len(labels))
        ax.barh(list(y), values, color=color)
        ax.set_yticks(list(y), labels)
        ax.invert_yaxis()
        ax.set_title(title, loc="left")
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.6g}"))
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:,.0f}" if v >= 10 else f" {v:,.3g}", va="center", fontsize=8)
        return _svg(fig)


def _hist(hist: dict[str, Any], title: str, xlabel: str,
          colors: dict[str, str]) -> str:
    edges = hist["edges"]
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(_WIDTH, 2.6))
        for name, counts in hist["counts"].items():
            ax.stairs(counts, edges, fill=True, alpha=0.55, color=colors.get(name, OTHER),
                      label=f"{_LABELS.get(name, name)} ({sum(counts):,})")
        if hist.get("log"):
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_title(title, loc="left")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("samples")
        if len(hist["counts"]) > 1:
            ax.legend(frameon=False)
        return _svg(fig)


def render_charts(summary: dict[str, Any]) -> dict[str, str]:
    """name -> inline SVG for each of CHARTS ("" where the run has no data for it)."""
    out = dict.fromkeys(CHARTS, "")
    run = summary["funnel"]["run"]
    steps = [(k, v) for k, v in run.items() if v is not None]
    if steps:
        out["funnel"] = _barh([k for k, _ in steps], [v for _, v in steps],
                              "Run-wide funnel (stage counters)", "samples", KEPT)
    reasons = summary["reasons"][:15]
    if reasons:
        out["reasons"] = _barh([f"{r['stage']}/{r['reason']}" for r in reasons],
                               [r["count"] for r in reasons], "Rejected samples by reason",
                               "samples")
    colors = {"kept": KEPT, "dropped": DROPPED}
    for key, label in (("loss", "loss (mean per response token)"),
                       ("ifd", "IFD (loss / loss without instruction)")):
        fig = summary.get(key)
        if fig and fig["hist"]:
            title = f"{'Loss' if key == 'loss' else 'IFD'}: kept vs not selected"
            out[key] = _hist(fig["hist"], title, label, colors)
    hist = summary["execution"]["hist"]
    if hist:
        out["execution"] = _hist(hist, "Execution time per sample", "seconds (log scale)",
                                 {"all": OTHER})
    stages = [s for s in summary["stages"] if s["seconds"]]
    if stages:
        out["stages"] = _barh([s["name"] for s in stages], [s["seconds"] for s in stages],
                              "Seconds per stage", "seconds", OTHER)
    return out
