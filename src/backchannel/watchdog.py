"""Event-loop watchdog: how long the loop was unable to look at new requests, and why.

Every request of a process shares one event loop; whatever runs on it without yielding (a
group commit's fsync, a WAL checkpoint, a garbage collection, a long synchronous section)
delays every other request by as long. Three measurements make such delays visible:

- **lag**: a task sleeps 10 ms again and again; how much later than asked it wakes is the
  time the loop was busy elsewhere (``event_loop_lag_seconds``, and the longest lag so far,
  ``event_loop_lag_max_seconds``);
- **stalls**: a thread watches the task's heartbeat; once the loop has not come round for
  ``stall`` seconds (100 ms) it takes the stack the loop's thread is in and logs it once per
  stall, counted as ``event_loop_stalls_total``. The thread needs the GIL to look: a loop
  stuck in C code that releases it (fsync, an SQLite step) is seen at once, one stuck in
  Python after at most the interpreter's switch interval (5 ms);
- **GC pauses**: ``gc.callbacks`` time every collection, per generation
  (``gc_pause_seconds{generation}``); a collection runs on whichever thread allocated, and
  on the loop's it is a lag like any other. The callback only notes the pause; the
  heartbeat puts it in the histogram. Why not at once: a collection can start inside any
  allocation, among them one that prometheus-client makes while it holds its lock (in a
  ``serve --workers N`` process, one lock for every metric, held while it encodes a new
  series' key); observing from the callback then waits for that lock on the thread that
  holds it, for ever.

Cost: 100 timer wake-ups and 100 thread wake-ups a second, a few microseconds each.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import sys
import threading
import time
import traceback
from typing import Any

from backchannel.metrics import Metrics

log = logging.getLogger("backchannel.watchdog")

INTERVAL = 0.01  # seconds between heartbeats
STALL = 0.1  # seconds without a heartbeat that count (and are logged) as a stall
STACK_FRAMES = 12  # innermost frames logged for a stall


class LoopWatchdog:
    def __init__(
        self, metrics: Metrics, *, interval: float = INTERVAL, stall: float = STALL
    ) -> None:
        self.metrics = metrics
        self.interval = interval
        self.stall = stall
        self.max_lag = 0.0
        #: (seconds the loop had been stuck when seen, innermost frames) of each stall seen
        self.stalls: list[tuple[float, list[str]]] = []
        self._beat = time.perf_counter()
        self._loop_thread: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._gc_start = 0.0
        self._gc_children = {g: metrics.gc_pause.labels(str(g)) for g in (0, 1, 2)}
        #: (generation, seconds) of collections not yet in the histogram (see above)
        self._gc_pauses: collections.deque[tuple[int, float]] = collections.deque()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start on the running loop (call from a coroutine on it)."""
        self._loop_thread = threading.get_ident()
        self._beat = time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._heartbeat())
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()
        gc.callbacks.append(self._on_gc)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._thread is not None:
            self._thread.join(1.0)
        self._record_gc_pauses()

    # -- the loop's side ----------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        interval = self.interval
        observe = self.metrics.loop_lag.observe
        while True:
            asked = time.perf_counter()
            self._beat = asked
            await asyncio.sleep(interval)
            lag = max(0.0, time.perf_counter() - asked - interval)
            self._record_gc_pauses()
            observe(lag)
            if lag > self.max_lag:
                self.max_lag = lag
                self.metrics.loop_lag_max.set(lag)
            if lag >= self.stall:
                self.metrics.loop_stalls.inc()

    # -- the watching thread ------------------------------------------------------------------
    def _watch(self) -> None:
        reported = -1.0
        while not self._stop.wait(self.interval):
            beat = self._beat
            stuck = time.perf_counter() - beat
            if stuck < self.stall + self.interval or beat == reported:
                continue
            reported = beat
            frame = sys._current_frames().get(self._loop_thread or 0)
            stack = _summary(frame) if frame is not None else ["(loop thread not found)"]
            self.stalls.append((stuck, stack))
            del self.stalls[:-100]
            log.warning(
                "event loop stalled for %.0f ms so far, in: %s",
                stuck * 1000,
                " <- ".join(reversed(stack)),
            )

    # -- garbage collection -------------------------------------------------------------------
    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """Note a collection's pause; never touch a metric here (see module docstring)."""
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self._gc_pauses.append(
                (info.get("generation", 2), time.perf_counter() - self._gc_start)
            )

    def _record_gc_pauses(self) -> None:
        pauses = self._gc_pauses
        while pauses:
            generation, seconds = pauses.popleft()
            child = self._gc_children.get(generation)
            if child is not None:
                child.observe(seconds)


def _summary(frame: Any) -> list[str]:
    """The innermost frames, outermost first, as ``file:line function``."""
    frames = traceback.extract_stack(frame)[-STACK_FRAMES:]
    return [f"{_short(f.filename)}:{f.lineno} {f.name}" for f in frames]


def _short(filename: str) -> str:
    for marker in ("site-packages/", "src/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename
