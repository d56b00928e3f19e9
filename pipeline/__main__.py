"""Command line: `python -m pipeline {run,config,sandbox,transform,score,select,
decontaminate}`."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from pipeline.config import ConfigError, dump_config, load_config, reference_markdown


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeline.executor.guard import RunLocked
    from pipeline.run import run_pipeline
    from pipeline.stage import FatalStageError

    cfg = load_config(args.config)
    out = Path(args.output)
    extend = Path(args.extend) if args.extend else None
    if extend is not None and extend.resolve() == out.resolve():
        raise ConfigError("--extend must name an earlier run's output, not --output itself "
                          "(rerunning with the same --output already resumes)")
    if args.dry_run:
        from pipeline.run import dry_run

        print("\n".join(dry_run(cfg, out, extend)))
        return 0
    try:
        stats = run_pipeline(cfg, out, extend=extend)
    except RunLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except FatalStageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"resume: {_resume_command()}  (finished work, LLM replies, sandbox verdicts "
              f"and scores, is kept in {out} and not done again)", file=sys.stderr)
        return 3
    _print_summary(out, stats)
    unreachable = sum(n for reason, n in stats["rejected_by_reason"].items()
                      if reason.endswith("/llm_unreachable"))
    if unreachable:  # fewer than llm.abort_after_failures in a row, but the data is missing
        print(f"error: {unreachable} sample(s) could not reach the model server, so the "
              "dataset is incomplete", file=sys.stderr)
        print(f"resume: {_resume_command()}  (finishes it: finished requests are served "
              f"from the cache in {out})", file=sys.stderr)
        return 3
    return 0


def _resume_command() -> str:
    """The command line this process was started with, to run again."""
    return " ".join(shlex.quote(a) for a in ["python", "-m", "pipeline", *sys.argv[1:]])


def _print_summary(out: Path, stats: dict) -> None:
    splits = ", ".join(f"{k} {v}" for k, v in stats.get("kept_by_split", {}).items())
    print(f"dataset: {out / 'dataset'}  (datasets.load_from_disk; {splits or 'train'}); "
          f"card: {out / 'dataset' / 'README.md'}; report: {out / 'report.html'}")
    print(f"kept {stats['kept']} of {stats['seeds']} seeds (yield {stats.get('yield', 0)}), "
          f"rejected {stats['rejected']} -> {out / 'rejected'}")
    for reason, n in stats["rejected_by_reason"].items():
        print(f"  dropped {n:4d}  {reason}")
    by = ", ".join(f"{k}={v}" for k, v in stats["kept_by_strategy"].items()) or "none"
    print(f"kept by strategy: {by}")
    print(f"tokens: {stats['tokens']}")
    select = stats.get("stages", {}).get("select")
    if select and "funnel" in select:
        print(f"selection ({select['policy']}, group_by {select['group_by']}; scorer "
              f"{stats.get('scorer')}): loss mean/median of selected vs not selected")
        for group, f in select["funnel"].items():
            if "scored" not in f:
                continue
            a, b = f["loss_selected"] or {}, f["loss_not_selected"] or {}
            print(f"  {group:<16} scored {f['scored']:4d}  selected {f['selected']:4d} "
                  f"(loss {a.get('mean', '-')}/{a.get('median', '-')})  not selected "
                  f"{f['not_selected']:4d} (loss {b.get('mean', '-')}/{b.get('median', '-')})")
    print(f"wall time {stats['wall_time_s']} s; stats: {out / 'stats.json'}")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from pipeline.report import summary_lines, write_report

    out = Path(args.output)
    if not (out / "stats.json").is_file():
        raise ConfigError(f"{out} holds no finished run (no stats.json): name a directory "
                          "`python -m pipeline run --output` wrote")
    print("\n".join(summary_lines(out)))
    if args.report:
        print(f"report: {write_report(out)}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pipeline.export import export

    try:
        paths = export(Path(args.output), args.format, Path(args.dest) if args.dest else None)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(str(p) for p in paths))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    if args.reference:
        print(reference_markdown())
        return 0
    print(dump_config(load_config(args.config)), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="debug logging, and Ray's own messages (execution plans, its workers' "
                   "output), which are otherwise only in Ray's log files")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the whole job and write a dataset")
    r.add_argument("--config", help="YAML config (default: built-in, embedded CPU model)")
    r.add_argument("--output", default="runs/default",
                   help="output directory; rerunning with the same one resumes")
    r.add_argument("--extend", metavar="PREVIOUS",
                   help="an earlier run's output: its finished work (LLM replies, sandbox "
                   "verdicts, scores) is reused, so only what is new is done; the output is "
                   "the complete dataset")
    r.add_argument("--dry-run", action="store_true",
                   help="say what would be redone, stage by stage, and why; run nothing")
    r.set_defaults(func=_cmd_run)

    i = sub.add_parser("inspect", help="print a finished run's summary (what report.html "
                       "shows): funnel, rejection reasons, losses, stage throughput")
    i.add_argument("output", help="a run's output directory")
    i.add_argument("--report", action="store_true",
                   help="also write OUTPUT/report.html again")
    i.set_defaults(func=_cmd_inspect)

    e = sub.add_parser("export", help="write each split of a run's dataset as JSON Lines or "
                       "Parquet, for tools that do not read `datasets` directories")
    e.add_argument("output", metavar="OUTPUT", help="a run's --output directory")
    e.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    e.add_argument("--dest", help="folder for <split>.<format> (default: OUTPUT/export)")
    e.set_defaults(func=_cmd_export)

    c = sub.add_parser("config", help="print the resolved config or the reference")
    c.add_argument("--config", help="YAML config to resolve (default: built-in)")
    c.add_argument("--show", action="store_true", help="print the resolved config as YAML")
    c.add_argument("--reference", action="store_true", help="print every key as markdown")
    c.set_defaults(func=_cmd_config)

    from pipeline.sandbox import cli as sandbox_cli

    sandbox_cli.add_parser(sub)
    from pipeline.transform import cli as transform_cli

    transform_cli.add_parser(sub)
    from pipeline.scoring import cli as scoring_cli

    scoring_cli.add_parsers(sub)
    from pipeline.decontam import cli as decontam_cli

    decontam_cli.add_parser(sub)
    return p


def _setup_logging(verbose: bool) -> None:
    """Plain timestamped lines; on a terminal they go through the progress display's
    console, so that they print above it instead of through it."""
    level = logging.DEBUG if verbose else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        from pipeline.progress import CONSOLE

        logging.basicConfig(level=level, format="%(name)s: %(message)s", datefmt="%H:%M:%S",
                            handlers=[RichHandler(console=CONSOLE, show_path=False)])
    else:
        logging.basicConfig(level=level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:  # one line per HTTP request is noise at this level
        for name in ("httpx", "httpx2", "urllib3"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
