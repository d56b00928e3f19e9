"""Stall detection that knows what is in flight, in place of Ray Data's no-progress limit.

Ray Data ends an execution when no block moved for `execution_no_progress_timeout_s`; one
LLM batch (several waves of requests) is one block, and on a slow machine it outlasts that
limit while the model answers request after request. So the executor turns Ray's limit off
and this watch decides: every stage actor reports each unit of work it finishes (an answered
request, a finished batch) to the stats sink, and a run is stalled only when nothing at all
has finished for `ray.stall_timeout_s`. A global step, which runs as one task, is not
watched (it reports when it ends).

On a stall the watch interrupts the driver's main thread; the executor turns that into a
`RunStalled` error that says what stalled and how to resume.
"""

from __future__ import annotations

import _thread
import logging
import threading
import time
from collections.abc import Callable

from pipeline.stage import FatalStageError

log = logging.getLogger(__name__)


class RunStalled(FatalStageError):
    """Nothing finished for `ray.stall_timeout_s`; the message says what and how to resume."""


class StallWatch:
    """Polls `idle_s()` (seconds since the last finished unit of work, run-wide) every
    `poll_s`; past `timeout_s` it records why and interrupts the main thread once."""

    def __init__(self, idle_s: Callable[[], float], timeout_s: float,
                 poll_s: float | None = None) -> None:
        self.idle_s, self.timeout_s = idle_s, timeout_s
        self.poll_s = poll_s or min(10.0, max(0.5, timeout_s / 5))
        self.paused = False
        self.fired: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stall-watch", daemon=True)

    def __enter__(self) -> StallWatch:
        if self.timeout_s > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self.paused:
                continue
            try:
                idle = self.idle_s()
            except Exception as exc:  # the sink is gone: Ray's own error will say why
                log.debug("stall watch: %s", exc)
                continue
            if idle >= self.timeout_s and not self._stop.is_set():
                self.fired = (f"no request answered and no batch finished for {idle:.0f} s "
                              f"(ray.stall_timeout_s = {self.timeout_s:.0f})")
                log.error("run stalled: %s", self.fired)
                _thread.interrupt_main()
                return


class Heartbeat:
    """In a stage actor: sends `beat()` whenever `ticks()` has grown, every `every_s`."""

    def __init__(self, ticks: Callable[[], int], beat: Callable[[], object],
                 every_s: float = 1.0) -> None:
        self._ticks, self._beat, self._every = ticks, beat, every_s
        self._last = ticks()
        self._stop = threading.Event()
        threading.Thread(target=self._loop, name="heartbeat", daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            now = self._ticks()
            if now != self._last:
                self._last = now
                try:
                    self._beat()
                except Exception as exc:  # the driver is going away
                    log.debug("heartbeat: %s", exc)

    def stop(self) -> None:
        self._stop.set()


def now() -> float:
    return time.time()
