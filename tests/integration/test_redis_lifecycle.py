"""A worker's life on the seed's Redis broker: health probes, losing Redis, retries, warm shutdown.

The same cases as on RabbitMQ (``test_health``, ``test_email_delivery``,
``test_shutdown``), with every worker and producer connected to Redis.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from celery import states
from celery.result import AsyncResult

from app import contracts
from app.celery_app import celery_app
from app.mail.service import message_id
from routing import names
from tests.integration.sleep_tasks import SLEEP
from tests.integration.sleep_workers import SleepWorker
from tests.support.environment import TEST_REDIS_BROKER_URL, worker_env
from tests.support.health_probe import probe, unready_while_the_broker_is_away
from tests.support.producer_process import send_as_producer
from tests.support.smtp_server import ScriptedHandler, ScriptedSmtp
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess

#: What a test gives a worker to drain, as terminationGracePeriodSeconds does.
GRACE_SECONDS = 60


def start(role: str, tmp_path: Path, **env: str) -> WorkerProcess:
    """A worker of ``role`` on Redis (unless ``env`` names another URL), ready when returned."""
    worker = WorkerProcess(
        role, tmp_path / f"{role}.log", worker_env(**{"CELERY_BROKER_URL": TEST_REDIS_BROKER_URL, **env}), []
    )
    wait_until(lambda: "ready." in worker.log() or worker.proc.poll() is not None, 60, f"the {role} worker")
    assert worker.proc.poll() is None, worker.log()
    return worker


def test_probes_follow_the_worker_lifecycle(redis_db: redis.Redis, database: Any, tmp_path: Path) -> None:
    # given a booking worker on Redis
    worker = start("booking", tmp_path, HEALTH_DIR=str(tmp_path))
    try:
        alive, ready = tmp_path / "booking.alive", tmp_path / "booking.ready"
        wait_until(lambda: alive.exists() and ready.exists(), 30, "heartbeat and readiness files")
        # then both probes pass, and the heartbeat keeps moving
        assert probe("live", "booking", tmp_path).returncode == 0
        assert probe("ready", "booking", tmp_path).returncode == 0
        first = alive.stat().st_mtime
        wait_until(lambda: alive.stat().st_mtime > first, 15, "a newer heartbeat", interval=0.5)
    finally:
        # when it stops, it is neither ready nor alive
        assert worker.stop() == 0
    assert not ready.exists()
    assert probe("live", "booking", tmp_path).returncode == 1


def test_losing_redis_makes_a_worker_unready_but_not_dead(
    redis_db: redis.Redis, database: Any, tmp_path: Path
) -> None:
    # given a booking worker that reaches Redis through a proxy
    url = urlsplit(TEST_REDIS_BROKER_URL)
    proxy = TcpProxy((url.hostname or "127.0.0.1", url.port or 6379))
    worker = None
    try:
        proxied = url._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
        worker = start("booking", tmp_path, HEALTH_DIR=str(tmp_path), CELERY_BROKER_URL=proxied)
        unready_while_the_broker_is_away(proxy, tmp_path)
    finally:
        if worker is not None:
            worker.stop()
        proxy.close()


@pytest.mark.parametrize("replies", [["451"], ["421", "451"]], ids=["451", "421-then-451"])
def test_transient_smtp_replies_are_retried_with_countdown_and_sent_once(
    redis_db: redis.Redis, database: Any, tmp_path: Path, replies: list[str]
) -> None:
    # given an email worker on Redis and an SMTP server that defers the first attempts
    smtp = ScriptedSmtp().start()
    handler: ScriptedHandler = smtp.handler
    handler.plan = list(replies)
    worker = start("email", tmp_path, SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp.port))
    try:
        # when a producer on Redis asks for a password reset
        kwargs = {
            "to": "ada@example.com",
            "name": "Ada",
            "reset_url": "https://m.example/r",
            "expires_minutes": 30,
        }
        task_id = send_as_producer(contracts.SEND_PASSWORD_RESET, kwargs, TEST_REDIS_BROKER_URL)

        # then the task retries with its countdown (held by the worker, on Redis) and sends once
        result = AsyncResult(task_id, app=celery_app)
        assert result.get(timeout=90) == f"Password reset sent {message_id(task_id)}"
        assert handler.attempts == len(replies) + 1
        assert len(handler.messages) == 1
        assert (redis_db.llen(names.EMAIL), redis_db.hlen("unacked")) == (0, 0)
    finally:
        worker.stop()
        smtp.stop()


def test_sigterm_finishes_the_running_task_and_hands_back_the_waiting_ones(
    redis_db: redis.Redis, database: Any, tmp_path: Path
) -> None:
    # given a worker on Redis running one task, with two more waiting
    worker = SleepWorker("redis-drain", tmp_path, CELERY_BROKER_URL=TEST_REDIS_BROKER_URL)
    try:
        wait_until(lambda: "ready." in worker.log(), 60, "the worker on Redis")
        marker = tmp_path / "started"
        running = send_as_producer(SLEEP, {"seconds": 3, "marker": str(marker)}, TEST_REDIS_BROKER_URL)
        waiting = [send_as_producer(SLEEP, {"seconds": 3}, TEST_REDIS_BROKER_URL) for _ in range(2)]
        wait_until(marker.exists, 30, "the first task to start")

        # when it is sent SIGTERM
        worker.proc.send_signal(signal.SIGTERM)

        # then it exits by itself within the grace period, with status 0, having finished the
        # running task; the waiting ones are back in the list for the next worker, uncounted
        assert worker.proc.wait(GRACE_SECONDS) == 0
        assert AsyncResult(running, app=celery_app).get(timeout=10)["pid"] == int(marker.read_text())
        assert [AsyncResult(r, app=celery_app).state for r in waiting] == [states.PENDING] * 2
        assert (redis_db.llen(names.BOOKING), redis_db.hlen("unacked")) == (2, 0)
        assert all(b"x-delivery-count" not in item for item in redis_db.lrange(names.BOOKING, 0, -1))
    finally:
        worker.stop()
