"""The run summary as plain text lines, for `python -m pipeline inspect OUTPUT`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.report.columns import read_columns, read_stats
from pipeline.report.summary import build_summary

NA = "n/a"


def fmt(v: Any, digits: int = 4) -> str:
    """A figure as the report prints it: n/a for none, thousands separators for counts."""
    if v is None:
        return NA
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.{digits}g}" if abs(v) < 1e6 else f"{v:,.0f}"
    return str(v)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """Columns padded to their widest cell; the first left-aligned, the others right."""
    cells = [header] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in cells]


def _quantile_rows(fig: dict[str, Any]) -> list[list[Any]]:
    out = []
    for name in ("kept", "dropped"):
        q = fig.get(name)
        if q:
            out.append([name if name == "kept" else "not selected", q["n"], q["mean"],
                        q["p10"], q["p25"], q["median"], q["p75"], q["p90"]])
    return out


def lines_of(summary: dict[str, Any], out_dir: Path | None = None) -> list[str]:
    """The text lines of a summary from `pipeline.report.summary.build_summary`."""
    c = summary["counts"]
    lines = [f"run: {out_dir}" if out_dir else "run",
             f"seeds {fmt(c['seeds'])}  kept {fmt(c['kept'])}  rejected {fmt(c['rejected'])}"
             f"  yield {fmt(c['yield'])}  wall {fmt(c['wall_time_s'])} s",
             *(["dataset splits: " + ", ".join(f"{k} {fmt(v)}" for k, v in
                                                summary["splits"].items())]
               if summary["splits"] else []),
             f"model {fmt(c['model'])} ({fmt(c['backend'])}), executor {fmt(c['executor'])}"
             + (f", scorer {c['scorer']}" if c.get("scorer") else "")]
    f = summary["funnel"]
    steps = f["steps"]
    lines += ["", "funnel (n/a: not counted for that row; see the report's notes)"]
    rows = [[name, *(row.get(s) for s in steps)] for name, row in f["rows"].items()]
    lines += table(["strategy", *steps], [*rows, ["(run-wide)", *(f["run"].get(s)
                                                                  for s in steps)]])
    if summary["reasons"]:
        lines += ["", "rejected by reason"]
        lines += table(["stage/reason", "samples"],
                       [[f"{r['stage']}/{r['reason']}", r["count"]] for r in summary["reasons"]])
    for key in ("loss", "ifd"):
        fig = summary.get(key)
        if fig and (fig["kept"] or fig["dropped"]):
            lines += ["", f"{key}: kept vs not selected"]
            lines += table(["", "n", "mean", "p10", "p25", "median", "p75", "p90"],
                           _quantile_rows(fig))
    d = summary["execution"]["durations"]
    if d:
        by = ", ".join(f"{k} {v:,}" for k, v in sorted(summary["execution"]["by_status"].items()))
        lines += ["", f"execution time (s) of {d['n']:,} samples: mean {fmt(d['mean'])}, "
                  f"median {fmt(d['median'])}, p90 {fmt(d['p90'])}, p99 {fmt(d['p99'])}, "
                  f"max {fmt(d['max'])}" + (f"; {by}" if by else "")]
    if summary["stages"]:
        lines += ["", "stages"]
        lines += table(["stage", "seconds", "in", "out", "dropped", "samples/s", "tokens",
                        "tokens/s"],
                       [[s["name"], s["seconds"], s["in"], s["out"], s["dropped"],
                         s["samples_per_s"],
                         s["prompt_tokens"] + s["completion_tokens"] + s["scored_tokens"],
                         s["tokens_per_s"]] for s in summary["stages"]])
    return lines


def summary_lines(out_dir: Path) -> list[str]:
    """The summary of the run written to `out_dir`, as plain text lines (no colour)."""
    out_dir = Path(out_dir)
    return lines_of(build_summary(read_stats(out_dir), read_columns(out_dir)), out_dir)
