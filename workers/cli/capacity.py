"""Capacity advice: completions per worker (measured, or the bench's), and the workers a target rate needs."""

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


#: The bench's drain row that stands for one worker of a queue's profile (tests/bench/README.md).
BENCH_ROWS = {"booking": "fleet booking, results, metrics on", "email": "fleet email, results"}
#: What that row measured, printed beside the rate taken from it.
BENCH_ASSUMPTIONS = {
    "booking": "one booking worker as `python -m workers booking` runs on the bench's machine "
    "(two processes per core there), draining no-op tasks with results in PostgreSQL: "
    "a task that does real work, or a worker with fewer cores, does less",
    "email": "one email worker (gevent, 100 greenlets) sending to an SMTP server that answers "
    "each message in 0.2 s: a slower server, or rate limits, lower it",
}
_DRAIN_TABLE = "| drain measurement |"


def bench_rate(results: str, queue: str) -> tuple[float, str]:
    """Tasks/s one worker of ``queue``'s profile did in the last run of a bench results file.

    Args:
        results: the text of ``tests/bench/RESULTS.md`` (or a run's output).
        queue: a work queue.

    Returns:
        The rate and the name of the row it was read from.

    Raises:
        ValueError: the bench has no row for the queue's profile, or the text no drain table.
    """
    row_name = BENCH_ROWS.get(queue)
    if row_name is None:
        raise ValueError(f"{queue}: the bench measures no drain of this profile; pass --per-worker")
    lines = results.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(_DRAIN_TABLE)]
    if not starts:
        raise ValueError("no drain table in the bench results (run `make bench`)")
    for line in lines[starts[-1] + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == row_name:
            return float(cells[1].replace(",", "")), row_name
    raise ValueError(f"the bench's last run has no row {row_name!r}")
