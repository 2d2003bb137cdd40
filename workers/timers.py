"""Worker steps on the worker's own timer, and the one that sweeps cancelled entries out of its heap.

With time limits on, Celery's prefork pool arms a timer in the worker's main
process for every task it hands a child (``AsynPool.on_timeout_set``: the soft
limit, or the hard one) and cancels it when the task ends. kombu's timer only
marks a cancelled entry; the entry stays in the heap until its time would have
come. So the main process holds every task of the last ``TASK_SOFT_TIME_LIMIT``
seconds (120 by default) as a dead timer, about half a KiB each: at 1,000
tasks/s some 120,000 entries and 60 MiB, at any moment, and every push and pop
on the heap pays for them. Every ``SWEEP_SECONDS`` this step rebuilds the heap
without them.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from kombu.asynchronous.timer import Timer

#: Seconds between two sweeps: the heap holds at most this long's cancelled entries.
SWEEP_SECONDS = 1.0


def sweep(timer: Timer) -> int:
    """Drop the cancelled entries from ``timer``'s heap, in place; return how many went.

    The heap is the list kombu's scheduler iterates (``Timer._queue``), so it is
    rebuilt in place. The sweep runs as one of the timer's own entries, on the
    loop's thread, between two steps of that scheduler, which reads the heap's
    head afresh at each step.
    """
    queue: list[Any] = timer._queue
    live = [item for item in queue if not item.entry.canceled]
    dropped = len(queue) - len(live)
    if dropped:
        heapq.heapify(live)
        queue[:] = live
    return dropped


class RepeatingStep(bootsteps.StartStopStep):
    """A worker step that runs a function every so often on the worker's own timer; stopping cancels it."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.entry: Any = None

    def repeat(self, worker: Any, seconds: float, fun: Callable[..., Any], *args: Any) -> None:
        """Call ``fun(*args)`` every ``seconds`` from the worker's timer until the step stops."""
        self.entry = worker.timer.call_repeatedly(seconds, fun, args, priority=10)

    def stop(self, worker: Any) -> None:
        """Stop repeating."""
        if self.entry is not None:
            self.entry.cancel()
            self.entry = None


class TimerSweep(RepeatingStep):
    """Worker step: sweep the event loop's timer every ``SWEEP_SECONDS`` (green pools have none)."""

    def start(self, worker: Any) -> None:
        """Sweep the timer the worker's event loop runs, when it has one."""
        if isinstance(worker.timer, Timer):
            self.repeat(worker, SWEEP_SECONDS, sweep, worker.timer)
