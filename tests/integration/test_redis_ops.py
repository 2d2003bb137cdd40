"""The ops commands on the seed's Redis broker: topology, status, capacity and every ``dlq`` command.

Each command runs as ops run it, a ``magnetiq`` process with ``CELERY_BROKER_URL``
naming Redis, beside a real booking worker on the same Redis database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import text

from app import contracts
from routing import names
from tests.support.cli import magnetiq
from tests.support.environment import TEST_REDIS_BROKER_URL, worker_env
from tests.support.producer_process import send_as_producer
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess

ON_REDIS = {"CELERY_BROKER_URL": TEST_REDIS_BROKER_URL}
#: Payments that do not exist yet: each task fails into booking.dlq.
FIXED, LEFT = 515_151, 525_252


@pytest.fixture(scope="module")
def booking_worker(
    redis_db: redis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """The topology applied by ``magnetiq topology apply``, then a booking worker on Redis."""
    applied = magnetiq("topology", "apply", **ON_REDIS)
    assert applied.returncode == 0, applied.stderr
    log = tmp_path_factory.mktemp("redis-ops") / "worker.log"
    worker = WorkerProcess("booking", log, worker_env(**ON_REDIS), ["--concurrency", "1"])
    try:
        wait_until(lambda: "ready." in worker.log() or worker.proc.poll() is not None, 60, "the worker")
        assert worker.proc.poll() is None, worker.log()
        yield worker
    finally:
        worker.stop()


def test_topology_check_sees_every_queue_bound_and_each_list(booking_worker: WorkerProcess) -> None:
    done = magnetiq("topology", "check", **ON_REDIS)
    assert done.returncode == 0, done.stderr
    for queue in names.WORK_QUEUES:
        assert f"ok      {queue} " in done.stdout
        assert f"ok      {names.dlq(queue)} " in done.stdout


def test_topology_check_names_an_unbound_queue(booking_worker: WorkerProcess, redis_db: redis.Redis) -> None:
    # given the email queue's binding gone (as on a fresh Redis no worker has declared on)
    key = f"_kombu.binding.{names.TASKS_EXCHANGE}"
    saved = redis_db.smembers(key)
    email = [member for member in saved if member.endswith(b"\x06\x16" + names.EMAIL.encode())]
    redis_db.srem(key, *email)
    try:
        # when ops check the topology, then the queue is named and the command fails with the fix
        done = magnetiq("topology", "check", **ON_REDIS)
    finally:
        redis_db.sadd(key, *email)
    assert done.returncode == 1
    assert f"MISSING {names.EMAIL} " in done.stdout
    assert "run `magnetiq topology apply`" in done.stderr


def test_dead_letters_are_listed_shown_replayed_and_purged(
    booking_worker: WorkerProcess, redis_db: redis.Redis, database: Any
) -> None:
    # given two payment tasks, published by a producer on Redis, failed into booking.dlq
    fixed = send_as_producer(contracts.PROCESS_PAYMENT, {"payment_id": FIXED}, TEST_REDIS_BROKER_URL)
    left = send_as_producer(contracts.PROCESS_PAYMENT, {"payment_id": LEFT}, TEST_REDIS_BROKER_URL)
    dlq = names.dlq(names.BOOKING)
    wait_until(lambda: redis_db.llen(dlq) == 2, 30, "both tasks in booking.dlq")

    # when ops list them, then both are there, oldest first, with where and why they died
    listed = magnetiq("dlq", "list", "booking", **ON_REDIS)
    assert listed.returncode == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines() if line.startswith((fixed, left))]
    assert [row.split()[:4] for row in rows] == [
        [fixed, contracts.PROCESS_PAYMENT, names.BOOKING, "rejected"],
        [left, contracts.PROCESS_PAYMENT, names.BOOKING, "rejected"],
    ]
    assert "2 message(s) read from booking.dlq, all left in place" in listed.stdout
    assert redis_db.llen(dlq) == 2

    # and one is shown whole: its headers and its arguments
    shown = magnetiq("dlq", "show", "booking", fixed, **ON_REDIS)
    assert shown.returncode == 0, shown.stderr
    message = json.loads(shown.stdout)
    assert message["body"][1] == {"payment_id": FIXED}
    assert message["headers"]["id"] == fixed
    assert message["headers"]["x-death"][0]["reason"] == "rejected"

    # and status shows the depth and the worker consuming, capacity the worker too
    status = magnetiq("status", **ON_REDIS)
    assert status.returncode == 0, status.stderr
    (booking,) = [line.split() for line in status.stdout.splitlines() if line.startswith("booking ")]
    assert booking[1:5] == ["0", "0", "1", "2"]  # ready, unacked, consumers, dlq
    assert "workers online (1)" in status.stdout
    capacity = magnetiq("capacity", "booking", "--target", "4", "--per-worker", "2", **ON_REDIS)
    assert capacity.returncode == 0, capacity.stderr
    assert "(consumers now: 1)" in capacity.stdout

    # when the cause of one is fixed and only it is replayed
    with database.begin() as db:
        db.execute(text("INSERT INTO payments (id, amount_cents) VALUES (:id, 1200)"), {"id": FIXED})
    replayed = magnetiq("dlq", "replay", "booking", "--task-id", fixed, **ON_REDIS)
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed {fixed} {contracts.PROCESS_PAYMENT} -> booking" in replayed.stdout

    # then the worker processes it once, and only the other one stays in the DLQ
    def payment_status() -> Any:
        with database.connect() as db:
            return db.execute(text("SELECT status FROM payments WHERE id = :id"), {"id": FIXED}).scalar()

    wait_until(lambda: payment_status() == "processed", 30, "the replayed payment to be processed")
    (rest,) = redis_db.lrange(dlq, 0, -1)
    assert json.loads(rest)["headers"]["id"] == left
    assert (redis_db.llen(names.BOOKING), redis_db.hlen("unacked")) == (0, 0)

    # and a purge deletes what is left, saying how much
    purged = magnetiq("dlq", "purge", "booking", "--yes", **ON_REDIS)
    assert purged.returncode == 0, purged.stderr
    assert "purged 1 message(s) from booking.dlq" in purged.stdout
    assert redis_db.llen(dlq) == 0


def test_a_replay_that_would_lose_its_message_moves_nothing(
    booking_worker: WorkerProcess, redis_db: redis.Redis
) -> None:
    # given a dead letter whose task no fleet queue routes
    dlq = names.dlq(names.BOOKING)
    stray = {"body": "W10=", "headers": {"id": "stray-1", "task": "no.such.task"}, "properties": {}}
    redis_db.lpush(dlq, json.dumps(stray))

    # when it is replayed, then the command fails naming it, and it is still in the DLQ
    done = magnetiq("dlq", "replay", "booking", **ON_REDIS)
    assert done.returncode == 1
    assert "stray-1" in done.stderr and "no route" in done.stderr
    assert redis_db.llen(dlq) == 1
    redis_db.delete(dlq)
