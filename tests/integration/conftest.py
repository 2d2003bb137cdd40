"""Fixtures for tests against real RabbitMQ, PostgreSQL, SMTP servers and worker processes."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from kombu import Connection
from sqlalchemy import text

from app.celery_app import celery_app
from app.db import engine_for
from app.migrate import upgrade
from app.schema import metadata
from app.settings import get_settings
from routing import declare_topology, names
from routing.topology import DEAD_LETTER_QUEUES, TASK_QUEUES
from tests.conftest import TEST_BROKER_URL, TEST_DATABASE_URL
from tests.payment_provider import Ledger, running_provider
from tests.smtp_server import ScriptedHandler, ScriptedSmtp
from tests.worker_process import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]
ALL_QUEUES = [q.name for q in (*TASK_QUEUES, *DEAD_LETTER_QUEUES)]
#: Every table the migrations create; each integration test starts with them empty.
TABLES = tuple(table.name for table in metadata.sorted_tables)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration as an integration test."""
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI runs every integration test; start the service)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def broker() -> Iterator[Connection]:
    """A kombu connection to the tests' vhost, with the topology declared."""
    connection = Connection(TEST_BROKER_URL, connect_timeout=5)
    try:
        connection.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:
        _unavailable(f"RabbitMQ vhost unreachable at {TEST_BROKER_URL} ({exc}); run `make services`")
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
        _unavailable(str(exc))
    return engine_for(get_settings().database_url)


def queue_depth(connection: Connection, queue: str) -> tuple[int, int]:
    """Return (ready messages, consumers) of a queue with a passive declare."""
    with connection.channel() as channel:
        _, ready, consumers = channel.queue_declare(queue, passive=True)
    return ready, consumers


def purge_all(connection: Connection) -> None:
    """Empty every fleet queue."""
    with connection.channel() as channel:
        for queue in ALL_QUEUES:
            channel.queue_purge(queue)


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
            db.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY"))

    reset()
    yield
    reset()


class SmtpSink:
    """A real SMTP server (aiosmtpd) that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.original_content))
        return "250 OK"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def wait_for(self, count: int, timeout: float = 30) -> list[Message]:
        """Wait until at least ``count`` messages arrived."""
        wait_until(lambda: len(self.messages) >= count, timeout, f"{count} emails")
        return self.messages


_provider_stack = ExitStack()
_provider: list[tuple[str, Ledger]] = []


def shared_provider() -> tuple[str, Ledger]:
    """The tests' payment provider (real HTTP on loopback), started on first use: (base URL, ledger)."""
    if not _provider:
        _provider.append(_provider_stack.enter_context(running_provider()))
    return _provider[0]


@pytest.fixture(scope="session")
def payment_provider() -> Iterator[tuple[str, Ledger]]:
    """The payment provider every test worker charges (``worker_env`` points them at it)."""
    yield shared_provider()
    _provider_stack.close()


@pytest.fixture
def ledger(payment_provider: tuple[str, Ledger]) -> Ledger:
    """The payment provider's ledger (emptied before each integration test by ``clean_state``)."""
    return payment_provider[1]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def worker_env(**overrides: str) -> dict[str, str]:
    """The environment a worker process of the tests runs with."""
    env = dict(os.environ)
    env.update(
        {
            "CELERY_BROKER_URL": TEST_BROKER_URL,
            "DATABASE_URL": TEST_DATABASE_URL,
            "PAYMENT_PROVIDER_URL": shared_provider()[0],
        }
    )
    env.update(overrides)
    return env


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
        queue = {"email": names.EMAIL, "booking": names.BOOKING, "maintenance": names.MAINTENANCE}[role]

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
