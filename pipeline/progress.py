"""What a person watching a run sees while it works: progress per stage.

Executors hand `RunProgress.update` the run-wide counters per stage (cumulative, as the
stages count them: `received`, `out`, `dropped_<reason>`) whenever they have new ones. On a
terminal that is a rich display, a line per stage: samples done of the total where it is
known (a strategy's first stage: its source samples), rate, ETA, kept and dropped so far.
Elsewhere (CI, cron, a log file) it is one log line every `every_s` seconds and one at the
end, so a log shows a run that is alive without filling up.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

log = logging.getLogger(__name__)

#: The console the progress display and (on a terminal) the log lines share, so that log
#: lines print above the display instead of through it.
CONSOLE = Console(stderr=True)

StatsFn = Callable[[dict[str, dict[str, Any]]], None]


def dropped(counters: dict[str, Any]) -> int:
    return int(sum(v for k, v in counters.items()
                   if k.startswith("dropped_") and isinstance(v, (int, float))))


class _Stage:
    """One stage's figures; its rate is over the run so far (the stages stream into one
    another, so each works from the start)."""

    def __init__(self, total: int | None, started: float) -> None:
        self.total = total
        self.done = self.kept = self.dropped = 0
        self.started = started

    def take(self, counters: dict[str, Any], now: float) -> None:
        done = int(counters.get("received", 0))
        self.done, self.kept, self.dropped = done, int(counters.get("out", 0)), dropped(counters)

    def rate(self, now: float) -> float | None:
        if not self.done or now - self.started < 1e-3:
            return None
        return self.done / (now - self.started)

    def line(self, name: str, now: float) -> str:
        done = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        rate = self.rate(now)
        parts = [f"{name} {done}", f"{rate:.2f}/s" if rate else "-/s"]
        if self.total and rate and self.done < self.total:
            parts.append(f"ETA {(self.total - self.done) / rate:.0f} s")
        parts.append(f"kept {self.kept} dropped {self.dropped}")
        return " ".join(parts)


class RunProgress:
    """Progress of the stages `names`; `totals` gives the stages whose input size is known.

    `live=None` picks the rich display when stderr is a terminal."""

    def __init__(self, names: list[str], totals: dict[str, int] | None = None, *,
                 live: bool | None = None, every_s: float = 30.0,
                 console: Console | None = None, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        totals = totals or {}
        self.stages = {n: _Stage(totals.get(n), clock()) for n in names}
        self.console = console or CONSOLE
        self.live = sys.stderr.isatty() if live is None else live
        self.every_s, self.clock = every_s, clock
        self._last_line = clock()
        self._bar: Progress | None = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RunProgress:
        if self.live:
            self._bar = Progress(
                TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                TextColumn("kept {task.fields[kept]} dropped {task.fields[dropped]}"),
                console=self.console, transient=False, refresh_per_second=2)
            for name, st in self.stages.items():
                self._tasks[name] = self._bar.add_task(name, total=st.total, rate="-/s",
                                                       kept=0, dropped=0)
            self._bar.start()
        return self

    def update(self, stats: dict[str, dict[str, Any]]) -> None:
        now = self.clock()
        for name, counters in stats.items():
            st = self.stages.get(name)
            if st is None or not isinstance(counters, dict):
                continue
            st.take(counters, now)
            if self._bar is not None:
                rate = st.rate(now)
                self._bar.update(self._tasks[name], completed=st.done, kept=st.kept,
                                 dropped=st.dropped, rate=f"{rate:.2f}/s" if rate else "-/s")
        if self._bar is None and now - self._last_line >= self.every_s:
            self._log(now)

    def _log(self, now: float) -> None:
        self._last_line = now
        shown = [st.line(n, now) for n, st in self.stages.items() if st.done or st.total]
        if shown:
            log.info("progress: %s", " | ".join(shown))

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        else:
            self._log(self.clock())
