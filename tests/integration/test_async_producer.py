"""``app.producer.aio``: publishing from ``async def`` code and awaiting results on the event loop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery.exceptions import TimeoutError
from kombu import Connection

from app.celery_app import celery_app
from app.contracts import InvalidTaskArguments
from app.producer import aio
from routing import declare_topology, names
from tests.support.broker import queue_depth
from tests.support.environment import TEST_DATABASE_URL, unavailable
from tests.support.paths import ROOT
from tests.support.servers import RABBITMQ_BIN, RabbitNode
from tests.support.smtp_server import SmtpSink
from tests.support.worker_process import WorkerProcess

#: Far longer than any wait below: a wait that returns early was woken by NOTIFY, not by its poll.
NO_POLL = 3600.0


@pytest.fixture(scope="module")
def email_worker(start_worker: Callable[..., WorkerProcess], smtp_sink: SmtpSink) -> WorkerProcess:
    return start_worker("email", SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_sink.port))


def store_later(task_id: str, value: Any, state: str = "SUCCESS", delay: float = 0.3) -> None:
    """Store ``task_id``'s result from another thread after ``delay`` seconds, as a worker would."""
    threading.Timer(delay, celery_app.backend.store_result, (task_id, value, state)).start()


def test_an_endpoint_queues_the_welcome_email_and_awaits_its_result(
    email_worker: WorkerProcess, sink: SmtpSink, database: Any
) -> None:
    # given an async endpoint's body: queue the seed's welcome email, then await the result
    async def register() -> tuple[str, Any]:
        result = await aio.enqueue_welcome_email("ada@example.com", "Ada")
        return result.id, await aio.wait_result(result.id, timeout=30)

    # when it runs on an event loop
    _, value = asyncio.run(register())

    # then the email was sent and the result came back on the loop
    assert value.startswith("Welcome email sent <")
    assert sink.wait_for(1)[0]["To"] == "ada@example.com"


def test_a_wait_is_woken_by_the_stored_rows_notify(database: Any) -> None:
    # given a result a worker stores 0.3 s from now
    task_id = str(uuid.uuid4())

    async def wait() -> tuple[Any, int]:
        store_later(task_id, {"ok": 1})
        value = await aio.wait_result(task_id, timeout=60, interval=NO_POLL)
        return value, aio._listeners[asyncio.get_running_loop()].wakeups

    # when it is awaited with a backstop read only once an hour, then the announcement woke it
    assert asyncio.run(wait()) == ({"ok": 1}, 1)


def test_where_notify_cannot_reach_the_process_a_wait_polls(
    database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a process whose probe found that NOTIFY does not reach it (a pooler in transaction mode)
    monkeypatch.setattr(celery_app.backend, "notify_works", False)
    task_id = str(uuid.uuid4())

    async def wait() -> tuple[Any, bool]:
        store_later(task_id, "polled", delay=0.2)
        value = await aio.wait_result(task_id, timeout=30, interval=0.1)
        return value, asyncio.get_running_loop() in aio._listeners

    # when it awaits a result, then it gets it by reading every interval, with no LISTEN connection
    assert asyncio.run(wait()) == ("polled", False)


def test_a_failure_is_raised_or_returned(database: Any) -> None:
    task_id = str(uuid.uuid4())
    celery_app.backend.store_result(task_id, ValueError("no such slot"), "FAILURE")
    with pytest.raises(ValueError, match="no such slot"):
        asyncio.run(aio.wait_result(task_id, timeout=5))
    assert isinstance(asyncio.run(aio.wait_result(task_id, timeout=5, propagate=False)), ValueError)


def test_a_wait_that_outlasts_its_timeout_raises(database: Any) -> None:
    with pytest.raises(TimeoutError):
        asyncio.run(aio.wait_result(str(uuid.uuid4()), timeout=0.5, interval=0.1))


def test_invalid_arguments_raise_in_the_coroutine(database: Any) -> None:
    with pytest.raises(InvalidTaskArguments, match="user_email"):
        asyncio.run(aio.enqueue_welcome_email("not-an-address", "Mallory"))


# -- a broker that stalls never stalls the loop -------------------------------------------------

#: Seconds the private node stays frozen (SIGSTOP) while the probe publishes.
FROZEN = 2.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """A private node with the topology declared (this test freezes it)."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        unavailable("the stalled-broker test needs rabbitmq-server (Debian package rabbitmq-server)")
    rabbit = RabbitNode(tmp_path_factory.mktemp("stall") / "rabbitmq", name="stall")
    try:
        rabbit.start()
        with Connection(rabbit.url(), connect_timeout=5) as connection:
            declare_topology(connection)
        yield rabbit
    finally:
        rabbit.stop()


def test_a_frozen_broker_holds_a_pool_thread_never_the_event_loop(node: RabbitNode) -> None:
    # given the broker frozen (SIGSTOP): connections open, nothing answers
    node.signal(signal.SIGSTOP)
    thaw = threading.Timer(FROZEN, node.signal, (signal.SIGCONT,))
    thaw.start()
    try:
        # when an event loop publishes a task through it, ticking every 10 ms meanwhile
        done = subprocess.run(
            [sys.executable, "-m", "tests.integration.async_stall_probe"],
            cwd=ROOT,
            env={**os.environ, "CELERY_BROKER_URL": node.url(), "DATABASE_URL": TEST_DATABASE_URL},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        thaw.join()
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])

    # then the publish waited for the broker to wake, while the loop kept ticking through it
    assert report["publish_seconds"] >= FROZEN / 2, report
    assert report["longest_gap"] < FROZEN / 4, report
    with Connection(node.url(), connect_timeout=5) as connection:
        assert queue_depth(connection, names.EMAIL)[0] == 1  # the broker confirmed it
