"""`pipeline score` (user JSONL in, scores out) and `pipeline select` (redo a run's cut).

    python -m pipeline score --input IN.jsonl --output OUT.jsonl [--config C.yaml]
    python -m pipeline select --from RUN_DIR --output NEW_DIR [--config C.yaml]

`score` reads records `{"id", "instruction", "response", ...}` and writes one record per
input, in order, with the other fields passed through and `loss`, `loss_alone`, `ifd`,
`response_tokens`, `score_truncated_tokens` and `score_error` added (numbers null and the
reason in `score_error` when a record cannot be scored). The scorer is `select.scorer` of
the config.

`select` reads RUN_DIR/candidates.jsonl (every sample that reached scoring: kept, not
selected, unscorable), scores them with the config's scorer (the run's own config when
--config is not given), reusing the run's scores where the scorer is the same, runs the
selection step, and writes a new dataset, rejected set and stats.json into NEW_DIR.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, PipelineConfig, dump_config, load_config
from pipeline.jsonl import read_file
from pipeline.record import Sample
from pipeline.scoring.base import ScoringError


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        rows = read_file(str(path))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for n, row in enumerate(rows, 1):
        if not isinstance(row.get("response"), str) \
                or not isinstance(row.get("instruction", ""), str):
            raise ConfigError(f"{path} record {n}: a record needs string fields "
                              "'instruction' and 'response' (and an 'id')")
    return rows


def cmd_score(args: argparse.Namespace) -> int:
    from pipeline.scoring.factory import build_scorer
    from pipeline.scoring.scorer import ScoreRequest

    cfg = load_config(args.config)
    rows = _read_jsonl(Path(args.input))
    try:
        scorer = build_scorer(cfg.select.scorer)
    except ScoringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    reqs = [ScoreRequest(str(r.get("id", i)), r.get("instruction", ""), r["response"])
            for i, r in enumerate(rows)]
    out = Path(args.output)
    tmp = out.with_name(out.name + ".tmp")
    done = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for k in range(0, len(reqs), cfg.select.scorer.batch_size):
            part = reqs[k:k + cfg.select.scorer.batch_size]
            for row, sc in zip(rows[k:k + len(part)], scorer.score(part), strict=True):
                f.write(json.dumps({**row, **sc.to_dict()}, ensure_ascii=False) + "\n")
                done += sc.error is None
    tmp.replace(out)
    scorer.backend.close()
    print(f"scored {done} of {len(rows)} records in {time.perf_counter() - t0:.1f} s with "
          f"{scorer.name} -> {out}")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from pipeline.card import write_card
    from pipeline.executor.local import LocalExecutor
    from pipeline.output import CANDIDATES, write_outputs
    from pipeline.scoring.factory import scorer_name
    from pipeline.scoring.select import SelectStep
    from pipeline.stages.score import SCORE_KEYS, ScoreStage

    run_dir, out = Path(args.from_dir), Path(args.output)
    source = run_dir / CANDIDATES
    if not source.is_file():
        raise ConfigError(f"{source} does not exist: --from must be the output directory of "
                          "a run with select.enabled (the default)")
    cfg: PipelineConfig = load_config(args.config or str(run_dir / "config.yaml"))
    old_stats = json.loads((run_dir / "stats.json").read_text())
    samples = [Sample.from_dict(json.loads(line)) for line in
               source.read_text(encoding="utf-8").splitlines() if line.strip()]
    same = old_stats.get("scorer") == scorer_name(cfg.select.scorer)
    reuse = {s.id: dict(s.scores) for s in samples if same and "loss" in s.scores}
    for s in samples:  # back to the state they entered scoring in
        s.reject_stage = s.reject_reason = None
        s.reject_detail = ""
        for k in (*SCORE_KEYS, "select_rank", "select_group_size", "loss_percentile"):
            s.scores.pop(k, None)
    t0 = time.perf_counter()
    stages = [ScoreStage(cfg.select.scorer, reuse=reuse), SelectStep(cfg.select, cfg.seed)]
    result = LocalExecutor().run(stages, samples)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(cfg))
    stats = {"selected_from": str(run_dir), "scorer": scorer_name(cfg.select.scorer),
             "scores_reused": bool(reuse), "stage_order": [s.name for s in stages],
             "stages": result.stage_stats, "wall_time_s": round(time.perf_counter() - t0, 1)}
    stats = write_outputs(out, result.samples, stats, candidates=True, output=cfg.output)
    write_card(out, stats, cfg)
    from pipeline.report import write_report

    write_report(out)
    print(f"selected {stats['kept']} of {len(samples)} candidates ({cfg.select.policy}, "
          f"group_by {cfg.select.group_by}); scores "
          f"{'reused' if reuse else 'computed'} -> {out / 'dataset'}")
    return 0


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("score", help="score instruction/response records with the scorer")
    s.add_argument("--input", required=True, help="JSONL of {id, instruction, response, ...}")
    s.add_argument("--output", required=True, help="JSONL: the records with their scores")
    s.add_argument("--config", help="YAML config; its select.scorer picks the model")
    s.set_defaults(func=cmd_score)
    r = sub.add_parser("select", help="re-score and re-select a run's candidates")
    r.add_argument("--from", dest="from_dir", required=True, help="a run's output directory")
    r.add_argument("--output", required=True, help="directory for the new dataset")
    r.add_argument("--config", help="YAML config (default: the run's own config.yaml)")
    r.set_defaults(func=cmd_select)
