"""The seed's configuration runs the fleet: its Redis URL as the broker, real workers, the seed's calls.

The producer calls run in a process of their own connected to ``redis://``,
as a producer service would; an email and a booking worker drain them. What
the fleet gives up on lands in the queue's dead-letter list, as on RabbitMQ.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Producer

from app.maintenance.dead_letters import report_dead_letters as inspect_dead_letters
from routing import names
from routing.redis_transport import Transport
from tests.integration.producer_calls import assert_every_call_ran
from tests.support.environment import TEST_DATABASE_URL, TEST_REDIS_BROKER_URL, worker_env
from tests.support.paths import ROOT
from tests.support.smtp_server import SmtpSink
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess
from workers.metrics import BrokerCollector


@pytest.fixture(scope="module")
def workers(
    redis_db: redis.Redis,
    database: Any,
    smtp_sink: SmtpSink,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[WorkerProcess]]:
    """An email and a booking worker on the Redis broker, each ready when returned."""
    started: list[WorkerProcess] = []
    env = worker_env(
        CELERY_BROKER_URL=TEST_REDIS_BROKER_URL, SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_sink.port)
    )
    try:
        for role in ("email", "booking"):
            log = tmp_path_factory.mktemp(f"redis-{role}") / "worker.log"
            worker = WorkerProcess(role, log, env, ["--concurrency", "2"])
            started.append(worker)
            wait_until(lambda w=worker: ready(w), 60, f"{role} worker on Redis", interval=0.2)
        yield started
    finally:
        for worker in started:
            worker.stop()


def ready(worker: WorkerProcess) -> bool:
    if worker.proc.poll() is not None:
        raise AssertionError(f"{worker.role} worker exited early:\n{worker.log()}")
    return "ready." in worker.log()


def run_producer_calls() -> dict[str, Any]:
    """Run the seed's calls in a process of their own, connected to the Redis broker."""
    env = {**os.environ, "CELERY_BROKER_URL": TEST_REDIS_BROKER_URL, "DATABASE_URL": TEST_DATABASE_URL}
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.producer_calls"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    published: dict[str, Any] = json.loads(done.stdout)
    return published


def test_the_seed_calls_run_on_the_seeds_redis_url(workers: list[WorkerProcess], smtp_sink: SmtpSink) -> None:
    # given the fleet's workers on redis://, the seed's broker URL
    # when the seed's calls (.delay, countdown, eta, send_task, chain, group, chord) and the
    # producer helpers (with countdown and eta, and enqueue_many) run in a producer process on it
    published = run_producer_calls()

    # then each was taken, each task succeeded (a delayed one no earlier than asked),
    # and each email reached the SMTP server
    assert_every_call_ran(published, smtp_sink)
    assert all("Traceback" not in worker.log() for worker in workers)


def test_a_failed_task_and_an_undecodable_body_land_in_the_dead_letter_list(
    workers: list[WorkerProcess], redis_db: redis.Redis
) -> None:
    # given a booking task that fails for good (no such payment), a body no worker can decode and
    # a JSON body that is not [args, kwargs, embed], all published to the Redis broker
    with (
        Connection(TEST_REDIS_BROKER_URL, transport=Transport) as connection,
        Producer(connection) as producer,
    ):
        failing = "11111111-2222-3333-4444-555555555555"
        producer.publish(
            [[], {"payment_id": 987654}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}],
            exchange=names.TASKS_EXCHANGE,
            routing_key=names.routing_key(names.BOOKING, "process_payment"),
            headers={"task": "app.tasks.booking_tasks.process_payment", "id": failing, "argsrepr": ""},
            serializer="json",
        )
        producer.publish(
            b"\x80\x04not json",
            exchange=names.TASKS_EXCHANGE,
            routing_key=names.routing_key(names.BOOKING, "process_payment"),
            content_type="application/json",
            content_encoding="binary",
        )
        producer.publish(
            "not args, kwargs, embed",
            exchange=names.TASKS_EXCHANGE,
            routing_key=names.routing_key(names.BOOKING, "process_payment"),
            headers={"task": "app.tasks.booking_tasks.process_payment", "id": "malformed-1"},
            serializer="json",
        )

    # when the booking worker has them, then all three are in booking.dlq with their reason,
    # none in the queue nor held unacked, and the worker still runs
    wait_until(lambda: redis_db.llen(names.dlq(names.BOOKING)) >= 3, 30, "three dead letters")
    dead = [json.loads(item) for item in redis_db.lrange(names.dlq(names.BOOKING), 0, -1)]
    assert [d["headers"]["x-death"][0]["reason"] for d in dead] == ["rejected"] * 3
    assert {d["headers"]["x-death"][0]["queue"] for d in dead} == {names.BOOKING}
    bodies = [base64.b64decode(d["body"]) for d in dead]
    assert b"\x80\x04not json" in bodies
    assert redis_db.llen(names.BOOKING) == 0
    assert redis_db.hlen("unacked") == 0
    assert all(worker.proc.poll() is None for worker in workers)

    # and the hourly dead-letter report reads the lists: their depth and the oldest's age
    with Connection(TEST_REDIS_BROKER_URL, transport=Transport) as connection:
        report = inspect_dead_letters(connection, [names.dlq(q) for q in names.WORK_QUEUES])
    depths = {row.queue: row.messages for row in report}
    assert depths == {"email.dlq": 0, "bulk.dlq": 0, "booking.dlq": 3, "maintenance.dlq": 0}
    (booking,) = [row for row in report if row.queue == "booking.dlq"]
    assert booking.oldest_age_seconds is not None and 0 <= booking.oldest_age_seconds < 60

    # and a worker's /metrics (what Prometheus and KEDA read) has every queue's depth, the empty ones too
    families = {family.name: family for family in BrokerCollector(TEST_REDIS_BROKER_URL).collect()}
    samples = {
        sample.labels["queue_name"]: sample.value
        for name in ("celery_queue_length", "magnetiq_dlq_messages")
        for sample in families[name].samples
    }
    assert samples == {
        "email": 0, "bulk": 0, "booking": 0, "maintenance": 0,
        "email.dlq": 0, "bulk.dlq": 0, "booking.dlq": 3, "maintenance.dlq": 0,
    }  # fmt: skip
