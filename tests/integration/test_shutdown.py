"""Graceful shutdown of a real prefork worker: SIGTERM drains running work; killed work is requeued."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import states
from celery.result import AsyncResult
from kombu import Connection

from app.celery_app import celery_app
from routing import names
from tests.integration.sleep_tasks import SLEEP
from tests.integration.sleep_workers import SleepWorker
from tests.support.broker import queue_depth
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

#: What the test gives the worker to drain, as terminationGracePeriodSeconds does.
GRACE_SECONDS = 60


@pytest.fixture
def worker(broker: Connection, database: Any, tmp_path: Path) -> Iterator[SleepWorker]:
    started = SleepWorker(f"booking-{uuid.uuid4().hex[:6]}", tmp_path)
    try:
        started.wait_consuming(broker, 1)
        yield started
    finally:
        started.stop()


def sleep_task(seconds: float, marker: Path | None = None) -> AsyncResult[Any]:
    kwargs: dict[str, Any] = {"seconds": seconds, "marker": str(marker) if marker else None}
    return celery_app.send_task(SLEEP, kwargs=kwargs)


def test_sigterm_finishes_the_running_task_then_exits(
    worker: SleepWorker, broker: Connection, tmp_path: Path
) -> None:
    # given a worker running one task, with two more waiting in its queue
    marker = tmp_path / "started"
    running = sleep_task(3, marker)
    waiting = [sleep_task(3) for _ in range(2)]
    wait_until(marker.exists, 30, "the first task to start")

    # when it is sent SIGTERM
    worker.proc.send_signal(signal.SIGTERM)

    # then it exits by itself within the grace period, with status 0
    assert worker.proc.wait(GRACE_SECONDS) == 0
    assert "Warm shutdown" in worker.log()
    # having finished and stored the running task
    assert running.get(timeout=10)["pid"] == int(marker.read_text())
    # and without starting the waiting ones, which are still queued for the next worker
    assert [AsyncResult(r.id, app=celery_app).state for r in waiting] == [states.PENDING] * 2
    wait_until(lambda: queue_depth(broker, names.BOOKING) == (2, 0), 10, "two tasks left in booking")


def test_a_task_killed_at_the_end_of_the_grace_returns_to_the_queue(
    worker: SleepWorker, broker: Connection, tmp_path: Path
) -> None:
    # given a worker running a task longer than any grace period
    marker = tmp_path / "started"
    unfinished = sleep_task(600, marker)
    wait_until(marker.exists, 30, "the task to start")

    # when it is sent SIGTERM, it waits for the task (warm shutdown) ...
    worker.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "Warm shutdown" in worker.log(), 30, "the warm shutdown to begin")
    assert worker.proc.poll() is None
    assert queue_depth(broker, names.BOOKING)[0] == 0  # the task is held, unacked
    # ... until the grace period ends and the runtime kills it with its pool
    worker.kill_group()

    # then the unacknowledged (late-ack) message is back in the queue, once, for the next worker
    wait_until(lambda: queue_depth(broker, names.BOOKING)[0] == 1, 15, "the task back in booking")
    with broker.channel() as channel:
        message = channel.basic_get(names.BOOKING, no_ack=False)
        assert message.headers["id"] == unfinished.id
        assert message.headers["x-delivery-count"] == 1
        channel.basic_reject(message.delivery_tag, requeue=True)
    assert AsyncResult(unfinished.id, app=celery_app).state == states.PENDING
