"""Capacity advice: measured completions per worker, and the workers a target rate needs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from app.schema import task_results

#: Result states of a task that ran to the end (a retry is not a completion).
FINISHED = ("SUCCESS", "FAILURE")


@dataclass(frozen=True)
class Throughput:
    """Completions of one queue's tasks, as the result rows record them."""

    queue: str
    #: Tasks finished in the window.
    tasks: int
    #: Seconds from the first to the last of those completions.
    seconds: float

    @property
    def per_second(self) -> float | None:
        """Completions per second between the first and the last (None below two)."""
        if self.tasks < 2 or self.seconds <= 0:
            return None
        return (self.tasks - 1) / self.seconds


def measure(engine: Engine, queue: str, since: datetime, queue_of: Callable[[str], str]) -> Throughput:
    """Count the queue's completions since ``since`` from the ``task_results`` rows.

    Args:
        engine: the result backend's database.
        queue: a work queue.
        since: start of the window (aware datetime).
        queue_of: task name -> the queue it is routed to.
    """
    query = (
        select(
            task_results.c.task_name,
            func.count(),
            func.min(task_results.c.date_done),
            func.max(task_results.c.date_done),
        )
        .where(task_results.c.status.in_(FINISHED), task_results.c.date_done >= since)
        .group_by(task_results.c.task_name)
    )
    with engine.connect() as db:
        rows = [row for row in db.execute(query) if row[0] and queue_of(row[0]) == queue]
    if not rows:
        return Throughput(queue, 0, 0.0)
    first, last = min(row[2] for row in rows), max(row[3] for row in rows)
    return Throughput(queue, sum(row[1] for row in rows), (last - first) / timedelta(seconds=1))


def workers_needed(target_rate: float, per_worker_rate: float, headroom: float) -> int:
    """Workers of a profile that sustain ``target_rate`` tasks/s with ``headroom`` to spare (0.2 = 20 %).

    Raises:
        ValueError: a rate is not positive or the headroom is negative.
    """
    if target_rate <= 0 or per_worker_rate <= 0 or headroom < 0:
        raise ValueError("rates must be positive and headroom not negative")
    return max(1, math.ceil(target_rate * (1 + headroom) / per_worker_rate - 1e-9))
