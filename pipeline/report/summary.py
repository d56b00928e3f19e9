"""The figures of a run's report, from stats.json and the output's columns.

`build_summary` returns plain JSON-able data; the HTML page (pipeline/report/html.py) and
the terminal summary (pipeline/report/text.py) both print it. Where a figure comes from:

- the funnel: `generated`, `parsed`, `novel` are the counters of the stage that counts the
  strategy (stats["by_strategy"]); the run-wide row takes the other steps from the stage
  counters (execute in/out, decontam out, transform created, score scored, select out).
  Per strategy, `executed`, `passed`, `decontaminated` and `transformed` are the stages'
  per-strategy counters (`<strategy>:received`, `:out`, `:created`: pipeline/stage.py).
  Runs from before those counters existed fall back to counting the written rows (a row
  dropped at or after a stage reached it), exact only when no stage after `execute`
  creates samples (transform, Case2Code); otherwise such a step is "n/a" (None), as is
  every step a run did not have;
- drops per stage and strategy: the rejected rows; reasons: stats["rejected_by_reason"];
- loss and IFD: the kept rows' columns and the `not_selected` rows' scores;
- execution time: every row with an execution; stages: stats["stages"] and stats["tokens"].
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.report.columns import RunColumns

#: The funnel's steps, in the order the pipeline runs them.
STEPS = ("generated", "parsed", "novel", "executed", "passed", "decontaminated",
         "transformed", "scored", "selected", "kept")
_HIST_BINS = 40


def quantiles(values: np.ndarray) -> dict[str, float] | None:
    """n, mean and the usual quantiles of the finite `values` (None when there are none)."""
    v = values[np.isfinite(values)]
    if not len(v):
        return None
    q = np.quantile(v, [0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
    return {"n": int(len(v)), "mean": float(v.mean()), "min": float(v.min()),
            "p10": float(q[0]), "p25": float(q[1]), "median": float(q[2]),
            "p75": float(q[3]), "p90": float(q[4]), "p99": float(q[5]), "max": float(v.max())}


def _hist(groups: dict[str, np.ndarray], log: bool = False) -> dict[str, Any] | None:
    """Shared-bin histograms of each group's finite values (the outer 0.5% of the values
    are counted in the end bins)."""
    vals = {k: v[np.isfinite(v) & ((v > 0) if log else True)] for k, v in groups.items()}
    every = np.concatenate(list(vals.values()))
    if not len(every):
        return None
    lo, hi = (float(x) for x in np.quantile(every, [0.005, 0.995]))
    if hi <= lo:
        lo, hi = (lo / 2, lo * 2) if log else (lo - 0.5, lo + 0.5)
    edges = np.geomspace(lo, hi, _HIST_BINS + 1) if log else np.linspace(lo, hi, _HIST_BINS + 1)
    counts = {k: np.histogram(np.clip(v, lo, hi), bins=edges)[0].tolist()
              for k, v in vals.items()}
    return {"edges": edges.tolist(), "counts": counts, "log": log}


def _int(d: dict[str, Any], key: str) -> int | None:
    v = d.get(key)
    return int(v) if isinstance(v, int | float) else None


def _stage_order(stats: dict[str, Any], cols: RunColumns) -> list[str]:
    order = list(stats.get("stage_order") or stats.get("stages", {}))
    return order + sorted(v for v in cols.stage.values if v not in order)


def _run_row(stats: dict[str, Any], by: dict[str, dict[str, Any]]) -> dict[str, int | None]:
    st = stats.get("stages", {})

    def counter(stage: str, key: str) -> int | None:
        return (_int(st[stage], key) or 0) if stage in st else None

    def total(key: str) -> int | None:
        got = [_int(row, key) for row in by.values()]
        return sum(g for g in got if g is not None) if any(g is not None for g in got) else None

    return {"generated": total("generated"), "parsed": total("parsed"), "novel": total("novel"),
            "executed": counter("execute", "in"), "passed": counter("execute", "out"),
            "decontaminated": counter("decontam", "out"),
            "transformed": counter("transform", "created"),
            "scored": counter("score", "scored"), "selected": counter("select", "out"),
            "kept": _int(stats, "kept")}


def funnel(stats: dict[str, Any], cols: RunColumns) -> dict[str, Any]:
    """The funnel per strategy and run-wide (see the module docstring for the sources)."""
    by = stats.get("by_strategy") or {}
    order = _stage_order(stats, cols)
    st = stats.get("stages", {})
    after_exec = order[order.index("execute") + 1:] if "execute" in order else []
    exact = "execute" in order and not any(_int(st.get(s, {}), "created") for s in after_exec)
    select_by = (st.get("select") or {}).get("by_strategy") or {}
    kept_by = stats.get("kept_by_strategy") or cols.strategy.counts(cols.kept)
    names = list(by) + sorted(set(kept_by) - set(by))
    drops = drops_by_stage(stats, cols)
    per_strategy = any(":" in k for c in st.values() if isinstance(c, dict) for k in c)
    rows: dict[str, dict[str, int | None]] = {}
    for name in names:
        mine = by.get(name, {})
        row: dict[str, int | None] = {k: _int(mine, k) for k in ("generated", "parsed", "novel")}
        d = drops["rows"].get(name, {})
        kept = int(kept_by.get(name, 0))

        def past(stage: str, inclusive: bool, d: dict[str, int] = d, kept: int = kept) -> int:
            i = order.index(stage) + (0 if inclusive else 1)
            return kept + sum(d.get(s, 0) for s in order[i:])

        row["executed"] = _per(st, "execute", name, "received")
        row["passed"] = _per(st, "execute", name, "out")
        row["decontaminated"] = _per(st, "decontam", name, "out")
        row["transformed"] = _per(st, "transform", name, "created")
        if not per_strategy:  # stats.json of a run without per-strategy counters
            row["executed"] = past("execute", True) if exact else None
            row["passed"] = past("execute", False) if exact else None
            row["decontaminated"] = past("decontam", False) if exact and "decontam" in order \
                else None
            row["transformed"] = None
        row["scored"] = _int(select_by.get(name, {}), "scored")
        sel = cols.kept & cols.strategy.mask(name) & np.isfinite(cols.loss)
        row["selected"] = int(sel.sum()) if "select" in order else None
        row["kept"] = kept
        rows[name] = row
    return {"steps": list(STEPS), "rows": rows, "run": _run_row(stats, by),
            "rows_exact": exact or per_strategy, "per_strategy_counters": per_strategy}


def _per(st: dict[str, Any], stage: str, strategy: str, key: str) -> int | None:
    """A stage's per-strategy counter; None where the run had no such stage."""
    return int(st[stage].get(f"{strategy}:{key}", 0)) if stage in st else None


def drops_by_stage(stats: dict[str, Any], cols: RunColumns) -> dict[str, Any]:
    """Rejected rows per strategy and the stage that dropped them, plus kept rows."""
    order = _stage_order(stats, cols)
    rej = ~cols.kept
    table: dict[str, dict[str, int]] = {}
    s_codes, g_codes = cols.strategy.codes[rej], cols.stage.codes[rej]
    width = len(cols.stage.values) + 1
    pairs = np.bincount((s_codes + 1) * width + (g_codes + 1),
                        minlength=(len(cols.strategy.values) + 1) * width)
    for si, sname in enumerate(["", *cols.strategy.values]):
        for gi, gname in enumerate(["", *cols.stage.values]):
            n = int(pairs[si * width + gi])
            if n:
                table.setdefault(sname or "(none)", {})[gname or "(none)"] = n
    stages = [s for s in order if any(s in r for r in table.values())]
    return {"stages": stages, "rows": table}


def stage_table(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Per stage: seconds, samples in/out/dropped, tokens and throughput."""
    st, tokens = stats.get("stages", {}), stats.get("tokens", {})
    out = []
    for name in list(stats.get("stage_order") or st) + sorted(set(st) -
                                                               set(stats.get("stage_order") or st)):
        c = st.get(name, {})
        seconds = float(c.get("seconds") or 0.0)
        # The stage's own request counters; else the kept samples' token counts.
        prompt = int(c.get("prompt_tokens") or tokens.get(f"{name}_prompt", 0))
        completion = int(c.get("completion_tokens") or tokens.get(f"{name}_completion", 0))
        scored = int(c.get("scored_tokens", 0) or 0)
        n_in = _int(c, "in") or 0
        tok = prompt + completion + scored
        out.append({"name": name, "seconds": seconds, "in": n_in, "out": _int(c, "out") or 0,
                    "dropped": sum(int(v) for k, v in c.items()
                                   if k.startswith("dropped_") and isinstance(v, int | float)),
                    "prompt_tokens": prompt, "completion_tokens": completion,
                    "scored_tokens": scored,
                    "samples_per_s": n_in / seconds if seconds else None,
                    "tokens_per_s": tok / seconds if seconds and tok else None})
    return out


def build_summary(stats: dict[str, Any], cols: RunColumns) -> dict[str, Any]:
    """Every figure of the report (plain data; see the module docstring)."""
    dropped = cols.reason.mask("not_selected")
    scored = bool(np.isfinite(cols.loss).any())
    reasons = stats.get("rejected_by_reason") or _reasons(cols)
    kind_by: dict[str, dict[str, int]] = {}
    for name in sorted(cols.strategy.values):
        mask = cols.kept & cols.strategy.mask(name)
        kinds = cols.kind.counts(mask)
        if kinds:
            original = int(mask.sum()) - sum(kinds.values())
            kind_by[name] = {**({"original": original} if original else {}), **kinds}
    has_exec = np.isfinite(cols.duration)
    return {
        "counts": {k: stats.get(k) for k in ("seeds", "kept", "rejected", "yield", "model",
                                             "backend", "executor", "scorer", "wall_time_s")},
        "rows": {"kept": cols.n_kept, "rejected": len(cols) - cols.n_kept},
        "splits": stats.get("kept_by_split") or dict(cols.splits),
        "funnel": funnel(stats, cols),
        "drops": drops_by_stage(stats, cols),
        "reasons": [{"stage": k.partition("/")[0], "reason": k.partition("/")[2], "count": v}
                    for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))],
        "kept_by_kind": kind_by,
        "loss": _scores(cols.loss, cols.kept, dropped) if scored else None,
        "ifd": _scores(cols.ifd, cols.kept, dropped) if scored else None,
        "execution": {"durations": quantiles(cols.duration),
                      "by_status": cols.status.counts(has_exec),
                      "hist": _hist({"all": cols.duration}, log=True)},
        "stages": stage_table(stats),
    }


def _reasons(cols: RunColumns) -> dict[str, int]:
    """stage/reason -> rejected rows, counted from the rows (stats.json has it too)."""
    rej = ~cols.kept
    width = len(cols.reason.values) + 1
    pairs = np.bincount((cols.stage.codes[rej] + 1) * width + cols.reason.codes[rej] + 1,
                        minlength=(len(cols.stage.values) + 1) * width)
    stages, reasons = ["", *cols.stage.values], ["", *cols.reason.values]
    return {f"{stages[i // width]}/{reasons[i % width]}": int(n)
            for i, n in enumerate(pairs) if n}


def _scores(values: np.ndarray, kept: np.ndarray, dropped: np.ndarray) -> dict[str, Any]:
    return {"kept": quantiles(values[kept]), "dropped": quantiles(values[dropped]),
            "hist": _hist({"kept": values[kept], "dropped": values[dropped]})}
