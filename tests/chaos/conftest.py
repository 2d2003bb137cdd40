"""Fault-harness fixtures: a private RabbitMQ node and PostgreSQL cluster, once per session.

The Redis cases (``redis_chaos``) add a private Redis server of their own, one
per case; the pooler cases (``pooler``) a private PgBouncer in front of the
private PostgreSQL; the cluster cases (``cluster_chaos``) a private
three-node RabbitMQ cluster, started once for them, and the partition case
(``partition_chaos``) another, each node in a network namespace of its own.

The ports are chosen when this module is imported, before the fleet's settings
are read, so the producer in this process and every worker it starts talk to the
private servers only.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.payment_provider import running_provider
from tests.support.servers import PostgresCluster, RabbitNode

BASE = Path(tempfile.mkdtemp(prefix="magnetiq-chaos-"))
BASE.chmod(0o755)  # the postgres user runs the private cluster when the tests run as root
atexit.register(shutil.rmtree, BASE, True)  # also when the servers never started
RABBIT = RabbitNode(BASE / "rabbitmq")
POSTGRES = PostgresCluster(BASE / "postgres")
DATABASE = "magnetiq"

os.environ["CELERY_BROKER_URL"] = RABBIT.url()
os.environ["DATABASE_URL"] = POSTGRES.url(DATABASE)
os.environ["CHAOS_LEDGER_DSN"] = POSTGRES.url(DATABASE)

from app.celery_app import celery_app  # noqa: E402
from tests.chaos.cluster_harness import ClusterChaos  # noqa: E402
from tests.chaos.harness import Chaos  # noqa: E402
from tests.chaos.redis_harness import RedisChaos  # noqa: E402
from tests.chaos.report import Report, render  # noqa: E402
from tests.support import netns  # noqa: E402
from tests.support.pgbouncer import PgBouncer  # noqa: E402
from tests.support.rabbit_cluster import RabbitCluster  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

REPORTS: list[Report] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark everything here as a chaos test (slow, real services)."""
    for item in items:
        if "/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.chaos)


@pytest.fixture(scope="session")
def services() -> Iterator[tuple[RabbitNode, PostgresCluster]]:
    """Start the private servers once; stop them (by process id) at the end."""
    if not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        pytest.fail("the fault harness needs rabbitmq-server (Debian package rabbitmq-server)")
    POSTGRES.init()
    try:
        pg_seconds = POSTGRES.start()
        rabbit_seconds = RABBIT.start()
        print(f"\nprivate PostgreSQL up in {pg_seconds:.1f}s, RabbitMQ in {rabbit_seconds:.1f}s")
        yield RABBIT, POSTGRES
    finally:
        celery_app.pool.force_close_all()  # the connections publishing opened
        RABBIT.stop()
        POSTGRES.stop()
        shutil.rmtree(BASE, ignore_errors=True)


H = TypeVar("H", bound=Chaos)


def _case(harness: H) -> Iterator[H]:
    """Run one case on ``harness``: reset first; stop its workers and keep its report after."""
    harness.reset()
    try:
        yield harness
    finally:
        harness.close()
        REPORTS.extend(harness.reports)


@pytest.fixture
def chaos(services: tuple[RabbitNode, PostgresCluster], tmp_path: Path) -> Iterator[Chaos]:
    """A fresh case: empty queues and tables; its workers are stopped and its table kept afterwards.

    Each case gets its own payment provider (a real HTTP server; idempotency keys
    honoured, as in production): keys repeat across cases (``payment:1``...), so a
    provider shared between them would answer later cases from its cache and
    charge nothing.
    """
    rabbit, postgres = services
    with running_provider() as provider:
        yield from _case(Chaos(rabbit, postgres, DATABASE, tmp_path, provider))


@pytest.fixture
def redis_chaos(services: tuple[RabbitNode, PostgresCluster], tmp_path: Path) -> Iterator[RedisChaos]:
    """A fresh case on the Redis broker: its own private Redis (AOF on), empty tables, its own provider."""
    rabbit, postgres = services
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        with running_provider() as provider:
            yield from _case(RedisChaos(server, rabbit, postgres, DATABASE, tmp_path, provider))
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cluster(services: tuple[RabbitNode, PostgresCluster]) -> Iterator[RabbitCluster]:
    """A private three-node RabbitMQ cluster, started once for the cluster cases; stopped by process id."""
    nodes = RabbitCluster(BASE / "cluster")
    try:
        print(f"\nprivate three-node RabbitMQ cluster up in {nodes.start():.1f}s")
        yield nodes
    finally:
        for name in list(nodes.frozen):
            nodes.thaw(nodes.node(name))
        nodes.stop()


@pytest.fixture
def cluster_chaos(
    cluster: RabbitCluster, services: tuple[RabbitNode, PostgresCluster], tmp_path: Path
) -> Iterator[ClusterChaos]:
    """A fresh case on the cluster: every node up, empty queues and tables, its own provider."""
    yield from _cluster_case(cluster, services, tmp_path)


def _cluster_case(
    cluster: RabbitCluster, services: tuple[RabbitNode, PostgresCluster], tmp_path: Path
) -> Iterator[ClusterChaos]:
    rabbit, postgres = services
    cluster.await_all()
    with running_provider() as provider:
        yield from _case(ClusterChaos(cluster, rabbit, postgres, DATABASE, tmp_path, provider))


@pytest.fixture(scope="session")
def partition_cluster(services: tuple[RabbitNode, PostgresCluster]) -> Iterator[RabbitCluster]:
    """A private three-node cluster, each node in its own network namespace on a bridge."""
    why = netns.available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the partition case needs network namespaces: {why}")
        pytest.skip(f"the partition case needs network namespaces: {why}")
    network = netns.Network(3)
    atexit.register(network.close)  # also when the session is interrupted
    nodes = RabbitCluster(BASE / "partition", network=network)
    try:
        print(f"\nprivate three-node RabbitMQ cluster in namespaces up in {nodes.start():.1f}s")
        yield nodes
    finally:
        nodes.stop()
        network.close()


@pytest.fixture
def partition_chaos(
    partition_cluster: RabbitCluster, services: tuple[RabbitNode, PostgresCluster], tmp_path: Path
) -> Iterator[ClusterChaos]:
    """A fresh case on the namespaced cluster: every node up, empty queues and tables, its own provider."""
    yield from _cluster_case(partition_cluster, services, tmp_path)


@pytest.fixture
def pooler(services: tuple[RabbitNode, PostgresCluster]) -> Iterator[PgBouncer]:
    """A private PgBouncer in transaction mode in front of the private PostgreSQL, for one case."""
    if shutil.which("pgbouncer") is None:
        pytest.fail("the pooler cases need pgbouncer (Debian package pgbouncer)")
    bouncer = PgBouncer(services[1].port)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the table of every case that ran."""
    if REPORTS:
        terminalreporter.section("fault harness")
        terminalreporter.write_line(render(REPORTS))
