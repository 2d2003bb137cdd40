"""The seed's ``backend="redis://..."``: results in Redis (Celery's backend), the broker on Redis too.

The workers and the producer process both run with ``CELERY_RESULT_BACKEND``
naming the same Redis database as the broker, as the seed configures it.
What the fleet builds on results is checked where a user meets it: the
seed's calls and their results, an ``async def`` wait, a task's own expiry,
and the mail ledger's ``sent`` mark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import text

from app.settings import get_settings
from tests.integration.producer_calls import RECIPIENTS, assert_every_call_ran
from tests.support.environment import TEST_DATABASE_URL, TEST_REDIS_BROKER_URL, worker_env
from tests.support.paths import ROOT
from tests.support.smtp_server import SmtpSink
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess

#: Broker and results in one Redis database, as the seed has them.
SEED = {"CELERY_BROKER_URL": TEST_REDIS_BROKER_URL, "CELERY_RESULT_BACKEND": TEST_REDIS_BROKER_URL}


@pytest.fixture(scope="module")
def workers(
    redis_db: redis.Redis, database: Any, smtp_sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    """An email and a booking worker with the seed's broker and result backend."""
    env = worker_env(SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_sink.port), **SEED)
    started: list[WorkerProcess] = []
    try:
        for role in ("email", "booking"):
            worker = WorkerProcess(role, tmp_path_factory.mktemp(f"results-{role}") / "w.log", env, [])
            started.append(worker)
            wait_until(
                lambda w=worker: "ready." in w.log() or w.proc.poll() is not None, 60, f"{role} worker"
            )
            assert worker.proc.poll() is None, worker.log()
        yield started
    finally:
        for worker in started:
            worker.stop()


@pytest.fixture(scope="module")
def results() -> Iterator[Celery]:
    """A Celery app reading results from the workers' Redis backend (JSON only, as they store them)."""
    app = Celery("results", broker=TEST_REDIS_BROKER_URL, backend=TEST_REDIS_BROKER_URL)
    app.conf.result_accept_content = ["json"]
    yield app
    app.close()


def as_producer(module_or_code: list[str]) -> Any:
    """Run a producer process with the seed's URLs; return the JSON it prints."""
    env = {**os.environ, "DATABASE_URL": TEST_DATABASE_URL, **SEED}
    done = subprocess.run(
        [sys.executable, *module_or_code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_seed_calls_store_their_results_in_redis(
    workers: list[WorkerProcess], results: Celery, redis_db: redis.Redis, database: Any, smtp_sink: SmtpSink
) -> None:
    # given workers on the seed's URLs; when the seed's calls (chain, group and chord included) run
    # in a producer process on the same URLs
    published = as_producer(["-m", "tests.integration.producer_calls"])

    # then each task succeeded, read back from Redis, and every email reached the SMTP server
    assert_every_call_ran(published, smtp_sink, app=results)
    ids = [task_id for call in published.values() for task_id in call["ids"]]
    assert all(redis_db.exists(f"celery-task-meta-{task_id}") for task_id in ids)
    with database.connect() as db:
        assert db.execute(text("SELECT count(*) FROM task_results")).scalar_one() == 0
        # and the mail ledger marked each email sent, once, without a result row to ride on
        sent = db.execute(text("SELECT status, count(*) FROM email_deliveries GROUP BY status")).all()
    assert dict(sent) == {"sent": len(RECIPIENTS)}
    assert all("Traceback" not in worker.log() for worker in workers)


def test_a_task_keeps_its_result_for_its_own_result_expires(
    workers: list[WorkerProcess], results: Celery, redis_db: redis.Redis
) -> None:
    # given a password reset (its task keeps results 1 h) and a welcome email (RESULT_EXPIRES)
    code = (
        "import json; from app import producer; "
        "r = producer.enqueue_password_reset('r@example.com', 'R', 'https://example.com/r', 30); "
        "w = producer.enqueue_welcome_email('w@example.com', 'W'); print(json.dumps([r.id, w.id]))"
    )
    reset, welcome = as_producer(["-c", code])

    # when both ran, then each result key expires after its task's own time
    results.AsyncResult(reset).get(timeout=30)
    results.AsyncResult(welcome).get(timeout=30)
    reset_ttl = redis_db.ttl(f"celery-task-meta-{reset}")
    welcome_ttl = redis_db.ttl(f"celery-task-meta-{welcome}")
    assert 3600 - 60 < reset_ttl <= 3600
    assert get_settings().result_expires - 60 < welcome_ttl <= get_settings().result_expires


def test_an_async_wait_returns_the_result_from_redis(workers: list[WorkerProcess]) -> None:
    # given an async def producer (a FastAPI endpoint) on the seed's URLs
    code = (
        "import asyncio, json; from app.producer import aio\n"
        "async def main():\n"
        "    result = await aio.enqueue_process_payment(909090)\n"
        "    try:\n"
        "        await aio.wait_result(result.id, timeout=30)\n"
        "    except Exception as exc:\n"
        "        return [type(exc).__name__, str(exc)]\n"
        "print(json.dumps(asyncio.run(main())))"
    )
    # when it publishes a payment that does not exist and awaits the result, then the task's
    # own failure comes back through the wait, read from Redis
    assert as_producer(["-c", code]) == ["PaymentNotFound", "payment 909090 does not exist"]
