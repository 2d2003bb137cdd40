"""The result backend behind PgBouncer in transaction mode: prepared statements and waits fall back."""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from celery import states
from sqlalchemy.engine import make_url

from app import result_backend
from app.celery_app import celery_app
from tests.support.environment import unavailable
from tests.support.pgbouncer import PgBouncer

pytestmark = pytest.mark.integration


@pytest.fixture
def pooler(database: Any) -> Iterator[PgBouncer]:
    """A private PgBouncer in transaction mode in front of the tests' PostgreSQL."""
    if shutil.which("pgbouncer") is None:
        unavailable("pgbouncer is not installed (Debian package pgbouncer)")
    bouncer = PgBouncer(make_url(str(database.url)).port or 5432)
    bouncer.start()
    yield bouncer
    bouncer.close()


@pytest.fixture
def pooled(database: Any, pooler: PgBouncer) -> result_backend.PostgresBackend:
    """A result backend (this process's only one for that URL) whose database URL is the pooler's."""
    name = make_url(str(database.url)).database
    assert name
    return result_backend.PostgresBackend(app=celery_app, url=pooler.url(name))


def _admin(pooler: PgBouncer, command: str) -> None:
    connection = psycopg2.connect(pooler.url("pgbouncer"))
    try:
        connection.autocommit = True
        connection.cursor().execute(command)
    finally:
        connection.close()


def test_a_result_stored_behind_the_pooler_survives_new_server_sessions(
    pooled: result_backend.PostgresBackend, pooler: PgBouncer, caplog: pytest.LogCaptureFixture
) -> None:
    # given a result stored and read through the pooler (the statements prepared on its server session)
    first = str(uuid.uuid4())
    pooled.store_result(first, {"n": 1}, states.SUCCESS)
    assert pooled.get_task_meta(first)["result"] == {"n": 1}

    # when the pooler hands the same client connections new server sessions
    _admin(pooler, "RECONNECT")
    second = str(uuid.uuid4())
    with caplog.at_level(logging.WARNING, logger="app.result_backend"):
        pooled.store_result(second, {"n": 2}, states.SUCCESS)

    # then the store says why and goes on with plain statements; nothing is lost
    assert "did not outlive its transaction" in caplog.text
    assert pooled.prepared is False
    assert pooled.get_task_meta(second)["result"] == {"n": 2}
    assert pooled.get_task_meta(first)["result"] == {"n": 1}


def test_many_threads_sharing_few_server_sessions_store_every_result(
    pooled: result_backend.PostgresBackend,
) -> None:
    # given 8 threads storing 40 results each through a pooler with 4 server sessions
    ids = [[str(uuid.uuid4()) for _ in range(40)] for _ in range(8)]
    errors: list[BaseException] = []

    def store(batch: list[str]) -> None:
        try:
            for task_id in batch:
                pooled.store_result(task_id, task_id, states.STARTED)
                pooled.store_result(task_id, task_id, states.SUCCESS)
        except BaseException as exc:  # reported below, with the thread's first error
            errors.append(exc)

    threads = [threading.Thread(target=store, args=(batch,)) for batch in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    # then every store succeeded and every result reads back as stored
    assert errors == []
    stored = dict(pooled.get_many([i for batch in ids for i in batch], timeout=30, interval=0.1))
    assert len(stored) == 320
    assert all(meta["status"] == states.SUCCESS and meta["result"] == i for i, meta in stored.items())


def test_a_wait_behind_the_pooler_polls_and_still_returns(
    pooled: result_backend.PostgresBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # given a task whose result another thread stores a moment later
    task_id = str(uuid.uuid4())
    threading.Timer(0.3, pooled.store_result, (task_id, "done", states.SUCCESS)).start()

    # when a caller waits for it through the pooler (LISTEN's session goes back to the pool)
    with caplog.at_level(logging.WARNING, logger="app.result_backend"):
        meta = pooled.wait_for(task_id, timeout=30, interval=0.2)

    # then the wait found NOTIFY does not reach it, said so, and returned the result by polling
    assert meta["result"] == "done"
    assert pooled.notify_works is False
    assert "does not reach this process" in caplog.text


def test_cheaper_result_commits_behind_the_pooler_fail_at_once_naming_the_parameter(
    database: Any, pooler: PgBouncer
) -> None:
    # given a backend set up with RESULT_SYNCHRONOUS_COMMIT=false, pointed at the pooler
    name = make_url(str(database.url)).database
    assert name
    before = celery_app.conf.result_backend_transport_options
    celery_app.conf.result_backend_transport_options = {"synchronous_commit": False}
    try:
        backend = result_backend.PostgresBackend(app=celery_app, url=pooler.url(name))
    finally:
        celery_app.conf.result_backend_transport_options = before

    # when it stores a result, then the pooler's refusal of the startup parameter is the error
    with pytest.raises(psycopg2.OperationalError, match="unsupported startup parameter: options"):
        backend._execute("SELECT 1", ())
