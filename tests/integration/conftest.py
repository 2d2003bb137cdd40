"""Fixtures for tests against real RabbitMQ, PostgreSQL, SMTP servers and worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from kombu import Connection

from app.celery_app import celery_app
from app.db import engine_for
from app.migrate import upgrade
from app.schema import metadata
from app.settings import get_settings, mask_url
from routing import declare_topology
from tests.support.broker import purge_all, queue_depth
from tests.support.environment import TEST_BROKER_URL, TEST_REDIS_BROKER_URL, unavailable, worker_env
from tests.support.payment_provider import Ledger, shared_provider, stop_shared_provider
from tests.support.smtp_server import ScriptedHandler, ScriptedSmtp, SmtpSink
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess
from workers.profiles import PROFILES

#: Every table the migrations create; each integration test starts with them empty.
TABLES = tuple(table.name for table in metadata.sorted_tables)
#: Empties them (children first) and restarts every sequence, in one round trip: as
#: TRUNCATE ... RESTART IDENTITY does, at a tenth of its cost on tables this small.
EMPTY_TABLES = f"""
DO $$
DECLARE s record;
BEGIN
    {" ".join(f"DELETE FROM {name};" for name in reversed(TABLES))}
    FOR s IN SELECT quote_ident(sequencename) AS name FROM pg_sequences WHERE schemaname = 'public' LOOP
        EXECUTE 'ALTER SEQUENCE ' || s.name || ' RESTART';
    END LOOP;
END $$
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration as an integration test."""
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker() -> Iterator[Connection]:
    """A kombu connection to the tests' vhost, with the topology declared."""
    connection = Connection(TEST_BROKER_URL, connect_timeout=5)
    try:
        connection.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:
        unavailable(f"RabbitMQ vhost unreachable at {TEST_BROKER_URL} ({exc}); run `make services`")
    declare_topology(connection)
    yield connection
    connection.release()
    celery_app.pool.force_close_all()  # the connections publishing opened


@pytest.fixture(scope="session")
def database() -> Any:
    """The tests' database, created and migrated once per session."""
    try:
        upgrade(get_settings().database_url)
    except ConnectionError as exc:
        unavailable(f"PostgreSQL unreachable at {mask_url(get_settings().database_url)} ({exc})")
    return engine_for(get_settings().database_url)


@pytest.fixture(autouse=True)
def clean_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """Purge the queues and truncate the tables before and after each integration test."""
    if "/integration/" not in str(request.node.fspath):
        yield
        return
    connection = request.getfixturevalue("broker")
    engine = request.getfixturevalue("database")
    provider: tuple[str, Ledger] = request.getfixturevalue("payment_provider")

    def reset() -> None:
        provider[1].reset()
        purge_all(connection)
        with engine.begin() as db:
            db.exec_driver_sql(EMPTY_TABLES)

    reset()
    yield
    reset()


@pytest.fixture(scope="session")
def payment_provider() -> Iterator[tuple[str, Ledger]]:
    """The payment provider every test worker charges (``worker_env`` points them at it)."""
    yield shared_provider()
    stop_shared_provider()


@pytest.fixture
def ledger(payment_provider: tuple[str, Ledger]) -> Ledger:
    """The payment provider's ledger (emptied before each integration test by ``clean_state``)."""
    return payment_provider[1]


@pytest.fixture(scope="module")
def smtp_sink() -> Iterator[SmtpSink]:
    """An SMTP sink on a free loopback port for the module's tests."""
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def sink(smtp_sink: SmtpSink) -> SmtpSink:
    """The module's SMTP sink, emptied for this test."""
    smtp_sink.messages.clear()
    return smtp_sink


@pytest.fixture(scope="module")
def start_worker(
    broker: Connection, database: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes; each is consuming its queue when returned."""
    started: list[WorkerProcess] = []

    def start(role: str, *extra: str, **env: str) -> WorkerProcess:
        log_path = tmp_path_factory.mktemp(f"worker-{role}") / "worker.log"
        worker = WorkerProcess(role, log_path, worker_env(**env), list(extra))
        started.append(worker)
        queue = PROFILES[role].queues[0]

        def consuming() -> bool:
            if worker.proc.poll() is not None:
                raise AssertionError(f"{role} worker exited early:\n{worker.log()}")
            return queue_depth(broker, queue)[1] >= 1 and "ready." in worker.log()

        wait_until(consuming, 60, f"{role} worker to consume {queue}", interval=0.2)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[ScriptedSmtp]:
    """A scriptable SMTP server (aiosmtpd) for one test module."""
    server = ScriptedSmtp().start()
    yield server
    server.stop()


@pytest.fixture
def smtp(smtp_server: ScriptedSmtp) -> ScriptedHandler:
    """The module's server, reset: accepts everything, no delay."""
    smtp_server.handler.reset()
    return smtp_server.handler


@pytest.fixture(scope="module")
def redis_db() -> Iterator[redis.Redis]:
    """The tests' own Redis database (``TEST_REDIS_BROKER_URL``), emptied before and after the module."""
    client = redis.Redis.from_url(TEST_REDIS_BROKER_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis unreachable at {TEST_REDIS_BROKER_URL} ({exc}); start redis-server")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
