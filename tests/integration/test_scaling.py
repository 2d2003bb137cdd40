"""Scaling by processes: a second booking worker raises the queue's drain rate; capacity advice reads it."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from kombu import Connection

from app.celery_app import celery_app
from tests.integration.sleep_tasks import SLEEP
from tests.integration.sleep_workers import SleepWorker
from workers.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

#: Tasks per drain, and how long each sleeps: sleep-bound, so the rate does not depend on free CPU.
TASKS, SLEEP_SECONDS = 16, 0.5


@pytest.fixture
def workers(database: Any, tmp_path: Path) -> Iterator[list[SleepWorker]]:
    started: list[SleepWorker] = []
    yield started
    for worker in started:
        worker.stop()


def drain(count: int) -> tuple[float, set[str]]:
    """Publish ``count`` sleep tasks at once and wait for them all.

    Returns:
        Tasks per second from the first start to the last finish (as the tasks
        recorded them), and the workers that ran them.
    """
    results = [celery_app.send_task(SLEEP, kwargs={"seconds": SLEEP_SECONDS}) for _ in range(count)]
    runs = [result.get(timeout=120) for result in results]
    span = max(run["finished"] for run in runs) - min(run["started"] for run in runs)
    return count / span, {run["worker"] for run in runs}


def test_two_booking_workers_drain_faster_than_one(
    workers: list[SleepWorker], broker: Connection, tmp_path: Path
) -> None:
    # given one booking worker (one prefork process)
    workers.append(SleepWorker(f"booking-a-{uuid.uuid4().hex[:6]}", tmp_path))
    workers[0].wait_consuming(broker, 1)

    # when it drains a batch
    one_rate, one_ran = drain(TASKS)
    assert len(one_ran) == 1

    # then capacity advice measures about that rate per worker from the result rows
    advice = CliRunner().invoke(
        main, ["capacity", "booking", "--target", "4", "--window", "10", "--workers", "1"]
    )
    assert advice.exit_code == 0, advice.output
    measured = float(re.search(r"= ([\d.]+) tasks/s per worker", advice.output).group(1))  # type: ignore[union-attr]
    assert 0.7 * one_rate < measured < 1.3 * one_rate, (measured, one_rate)
    needed = int(re.search(r"booking: (\d+) worker\(s\) of profile booking", advice.output).group(1))  # type: ignore[union-attr]
    assert needed == math.ceil(4 * 1.2 / measured)
    assert needed > 1

    # and when a second worker of the profile joins and the same batch is drained again
    workers.append(SleepWorker(f"booking-b-{uuid.uuid4().hex[:6]}", tmp_path))
    workers[1].wait_consuming(broker, 2)
    two_rate, two_ran = drain(TASKS)

    # then both took work, and the queue drained clearly faster
    assert len(two_ran) == 2
    assert two_rate > 1.5 * one_rate, (two_rate, one_rate)
