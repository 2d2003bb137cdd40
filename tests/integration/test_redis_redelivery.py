"""A Redis broker hands a killed worker's task to another worker after the visibility timeout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from app.celery_app import celery_app
from routing import names
from routing.redis_transport import DELIVERY_COUNT
from routing.topology import DELIVERY_LIMITS
from tests.integration.sleep_tasks import CRASH, SLEEP
from tests.integration.sleep_workers import SleepWorker
from tests.support.environment import TEST_REDIS_BROKER_URL
from tests.support.producer_process import send_as_producer
from tests.support.waiting import wait_until
from workers.profiles import redis_visibility_timeout


def test_a_task_whose_worker_was_killed_runs_again_after_the_visibility_timeout(
    redis_db: redis.Redis, database: Any, tmp_path: Path
) -> None:
    # given a booking worker on Redis with short limits: a visibility timeout of
    # (4 + 1) x 3 s + 1 s = 16 s, as the profiles set it
    limits = {"TASK_SOFT_TIME_LIMIT": "2", "TASK_TIME_LIMIT": "3", "REDIS_ETA_HORIZON": "1"}
    assert redis_visibility_timeout(3, 1) == 16
    first = SleepWorker("redis-first", tmp_path, CELERY_BROKER_URL=TEST_REDIS_BROKER_URL, **limits)
    second = None
    try:
        wait_until(lambda: ready_process(first), 60, "the first worker on Redis")
        # and a task it has started
        marker = tmp_path / "started"
        result = send_as_producer(SLEEP, {"seconds": 1.0, "marker": str(marker)}, TEST_REDIS_BROKER_URL)
        wait_until(marker.exists, 30, "the task to start")

        # when the worker and its pool are killed mid-task, and another worker starts
        first.kill_group()
        second = SleepWorker("redis-second", tmp_path, CELERY_BROKER_URL=TEST_REDIS_BROKER_URL, **limits)

        # then Redis hands the task to the new worker once the visibility timeout passed,
        # and it runs there to success
        outcome = celery_app.AsyncResult(result).get(timeout=90)
        assert outcome["worker"].startswith("redis-second@")
        wait_until(lambda: redis_db.hlen("unacked") == 0, 30, "the rerun's ack (after its result)")
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_a_task_that_keeps_killing_its_process_is_dead_lettered_past_the_delivery_limit(
    redis_db: redis.Redis, database: Any, tmp_path: Path
) -> None:
    # given a booking worker on Redis (delivery limit 3) and a task that kills its process
    worker = SleepWorker("redis-crash", tmp_path, CELERY_BROKER_URL=TEST_REDIS_BROKER_URL)
    try:
        wait_until(lambda: ready_process(worker), 60, "the worker on Redis")
        runs = tmp_path / "runs"

        # when it is published
        send_as_producer(CRASH, {"marker": str(runs)}, TEST_REDIS_BROKER_URL)

        # then it ran once and again after each failed delivery up to the limit, and then
        # went to booking.dlq with the reason a quorum queue gives; the worker lives on
        dlq = names.dlq(names.BOOKING)
        wait_until(lambda: redis_db.llen(dlq) == 1, 60, "the task in booking.dlq")
        assert len(runs.read_text().split()) == DELIVERY_LIMITS[names.BOOKING] + 1
        dead = json.loads(redis_db.lindex(dlq, 0))
        assert dead["headers"]["x-death"][0]["reason"] == "delivery_limit"
        assert dead["headers"][DELIVERY_COUNT] == DELIVERY_LIMITS[names.BOOKING] + 1
        assert (redis_db.llen(names.BOOKING), redis_db.hlen("unacked")) == (0, 0)
        assert worker.proc.poll() is None
    finally:
        worker.stop()


def ready_process(worker: SleepWorker) -> bool:
    if worker.proc.poll() is not None:
        raise AssertionError(f"worker exited early:\n{worker.log()}")
    return "ready." in worker.log()
