"""Stall detection that knows what is in flight, in place of Ray Data's no-progress limit.

Ray Data ends an execution when no block moved for `execution_no_progress_timeout_s`; one
LLM batch (several waves of requests) is one block, and on a slow machine it outlasts that
limit while the model answers request after request. So the executor turns Ray's limit off
and this watch decides: every stage actor reports each unit of work it finishes (an answered
request, a finished batch) to the stats sink, and a run is stalled only when nothing at all
has finished for `ray.stall_timeout_s`. A global step, which runs as one task, is not
watched (it reports when it ends). Until the first stage actor is up the limit is at least
STARTUP_S: starting Ray's workers on a busy machine takes tens of seconds, which is not a
stall, but a run whose actors never start (no free CPU) is one.

On a stall the watch records why (`fired`). The executor runs Ray Data in a thread of its
own and waits for it in the main thread, looking at `fired` every second; on a stall it
kills the stage actors (which ends the stuck execution) and raises `RunStalled` (what
stalled and how to resume). Interrupting a main thread that waits inside Ray was tried
first: a simulated signal does not wake a thread blocked on a lock, and the run hung.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pipeline.stage import FatalStageError

log = logging.getLogger(__name__)

STARTUP_S = 300.0  # the least time the stage actors get to start


class RunStalled(FatalStageError):
    """Nothing finished for `ray.stall_timeout_s`; the message says what and how to resume."""


class StallWatch:
    """Polls `idle_s()` (seconds since the last finished unit of work, run-wide, and
    whether a stage actor is up) every `poll_s`; past `timeout_s` (before any actor is up:
    at least STARTUP_S) it records why in `fired`, once."""

    def __init__(self, idle_s: Callable[[], tuple[float, bool]], timeout_s: float,
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
                idle, started = self.idle_s()
            except Exception as exc:  # the sink is gone: Ray's own error will say why
                log.debug("stall watch: %s", exc)
                continue
            limit = self.timeout_s if started else max(self.timeout_s, STARTUP_S)
            if idle >= limit and not self._stop.is_set():
                self.fired = (f"no request answered and no batch finished for {idle:.0f} s "
                              f"(ray.stall_timeout_s = {self.timeout_s:.0f})" if started else
                              f"no stage actor started in {idle:.0f} s (Ray could not place "
                              "them: are the CPUs taken?)")
                log.error("run stalled: %s", self.fired)
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
