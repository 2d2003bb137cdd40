"""A task's Celery ``rate_limit`` on real prefork workers: calls spaced, none lost, other work not held."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest
from celery.utils.time import rate
from sqlalchemy import text

from app import producer
from app.contracts import EXPORT_BOOKING_CALENDARS, SEND_BOOKING_REMINDERS
from app.tasks.booking_tasks import EXPORT_RATE_LIMIT
from tests.support.worker_process import WorkerProcess

#: Calls published at once: more than the worker's two processes could run side by side.
CALLS = 3


@pytest.fixture(scope="module")
def workers(
    start_worker: Callable[..., WorkerProcess], tmp_path_factory: pytest.TempPathFactory
) -> list[WorkerProcess]:
    """A maintenance worker of two processes (where exports start) and a booking worker (their feeds)."""
    calendars = tmp_path_factory.mktemp("calendars")
    return [
        start_worker("maintenance", "--concurrency", "2", CALENDAR_EXPORT_DIR=str(calendars)),
        start_worker("booking", "--concurrency", "1", CALENDAR_EXPORT_DIR=str(calendars)),
    ]


def test_exports_published_at_once_start_no_faster_than_the_rate_limit(
    workers: list[WorkerProcess], database: Any
) -> None:
    # given the shipped limit, 10 exports a minute: one every 6 s per worker
    interval = 1 / rate(EXPORT_RATE_LIMIT)

    # when a burst of exports is published as a producer does (by name, confirmed)
    # and a booking task right after it
    results = producer.enqueue_many(EXPORT_BOOKING_CALENDARS, [{}] * CALLS)
    booking = producer.publish(SEND_BOOKING_REMINDERS, None, {"day": "2031-03-14"})

    # then every one of them runs (none lost) ...
    assert [r.get(timeout=4 * CALLS * interval) for r in results] == ["Exported 0 calendars"] * CALLS
    # ... and the result rows show them done one interval apart, not side by side
    # (each export takes milliseconds; the slack is scheduling, never a faster rate)
    with database.connect() as db:
        done = (
            db.execute(
                text("SELECT date_done FROM task_results WHERE task_id = ANY(:ids) ORDER BY date_done"),
                {"ids": [r.id for r in results]},
            )
            .scalars()
            .all()
        )
    assert len(done) == CALLS
    gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(done)]
    assert min(gaps) >= 0.9 * interval, gaps
    assert all("Traceback" not in worker.log() for worker in workers)

    # and the booking task was not held behind the waiting exports (it is done before the last)
    assert booking.get(timeout=30).startswith("Queued 0 booking reminders")
    with database.connect() as db:
        booked = db.execute(
            text("SELECT date_done FROM task_results WHERE task_id = :id"), {"id": booking.id}
        ).scalar_one()
    assert booked < done[-1]
