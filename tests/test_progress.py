"""The progress display: a rich line per stage on a terminal, periodic log lines elsewhere;
and an executor feeding it from the stages' own counters."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from pipeline.executor.local import LocalExecutor
from pipeline.progress import RunProgress
from tests.test_executor import OddRejectStage, SplitStage, _seeds


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_terminal_display_shows_done_of_total_rate_and_drops() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=140)
    clock = _Clock()
    with RunProgress(["gen", "execute"], {"gen": 10}, live=True, console=console,
                     clock=clock) as p:
        p.update({"gen": {"received": 1, "out": 1}})
        clock.t += 4
        p.update({"gen": {"received": 5, "out": 4, "dropped_parse_failed": 1},
                  "execute": {"received": 3, "out": 2, "dropped_exec_failed": 1}})
    text = buf.getvalue()
    assert "5/10" in text and "kept 4 dropped 1" in text and "kept 2 dropped 1" in text
    assert "1.25/s" in text  # 5 samples in the 4 s since the stage's first count


def test_without_a_terminal_one_log_line_per_period_and_one_at_the_end(caplog) -> None:
    clock = _Clock()
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    with RunProgress(["gen"], {"gen": 8}, live=False, every_s=30, clock=clock) as p:
        for _ in range(10):  # 10 updates 5 s apart: 50 s, one line at 30 s
            clock.t += 5
            p.update({"gen": {"received": 2, "out": 2}})
        p.update({"gen": {"received": 8, "out": 6, "dropped_exec_failed": 2}})
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.progress"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("progress: gen 2/8")
    assert "gen 8/8" in lines[1] and "kept 6 dropped 2" in lines[1]


def test_the_local_executor_reports_the_counters_after_every_batch() -> None:
    seen: list[dict] = []
    stage = SplitStage()
    stage.batch_size = 2
    LocalExecutor(progress=lambda stats: seen.append({k: dict(v) for k, v in stats.items()})
                  ).run([stage, OddRejectStage()], _seeds(5))
    split = [s["split"]["received"] for s in seen if "split" in s]
    assert split[:3] == [2, 4, 5]  # batches of 2, 2 and 1
    last = [s["odd"] for s in seen if "odd" in s][-1]
    assert last["received"] == last["out"] + sum(v for k, v in last.items()
                                                  if k.startswith("dropped_"))
