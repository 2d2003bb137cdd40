"""The fault harness on a three-node RabbitMQ cluster: the same ledgers and counts, every node in the URL.

Workers and the producer get the cluster as one kombu failover list
(``CELERY_BROKER_URL="amqp://…node1;amqp://…node2;amqp://…node3"``): a client
whose node goes away connects to the next. The producer publishes as a
producer service does (the fleet's app built for that URL, ``send_task`` with
publisher confirms); a quorum queue confirms a message once a majority of its
members has it. Queue depths and leaders are read with ``rabbitmqctl`` from a
node that is up and not frozen.
"""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path

from celery import Celery
from kombu import Connection
from sqlalchemy import text

from app.celery_app import celery_app, create_celery
from app.settings import Settings
from tests.chaos.harness import WORK_QUEUES, Chaos
from tests.chaos.operations import PUBLISH_TIMEOUT, Operation, send_with
from tests.chaos.workers import Worker
from tests.support.payment_provider import Ledger
from tests.support.rabbit_cluster import RabbitCluster
from tests.support.servers import PostgresCluster, RabbitNode

#: Seconds after a fault in which the longest stall is looked for.
STALL_WINDOW = 60.0


class ClusterChaos(Chaos):
    """``Chaos`` with the broker a private three-node cluster; faults are timed (``fault_at``)."""

    def __init__(
        self,
        cluster: RabbitCluster,
        rabbit: RabbitNode,
        postgres: PostgresCluster,
        database: str,
        tmp: Path,
        provider: tuple[str, Ledger],
    ) -> None:
        self.cluster = cluster
        super().__init__(rabbit, postgres, database, tmp, provider)
        self.app: Celery = create_celery(Settings(celery_broker_url=cluster.url(), database_url=self.url))
        celery_app.set_current()  # the new app made itself current
        #: Wall-clock moments the faults of this case struck (``fault_at``).
        self.faults: list[float] = []
        #: Operator steps a case had to take (shown after its name in the table).
        self.remarks: list[str] = []

    def broker(self) -> Connection:
        """A kombu connection to whichever node answers first (the failover list)."""
        connection = Connection(self.cluster.url(), connect_timeout=3)
        connection.ensure_connection(
            max_retries=2 * len(self.cluster.nodes), interval_start=0, interval_max=0.5
        )
        return connection

    def close(self) -> None:
        """Stop this case's workers, then the producer's connections."""
        super().close()
        self.app.close()

    def start_worker(self, role: str, *extra: str, delay: float = 0.0, **settings: str) -> Worker:
        """A worker given every node of the cluster."""
        return super().start_worker(
            role, *extra, delay=delay, CELERY_BROKER_URL=self.cluster.url(), **settings
        )

    def queued(self) -> int:
        """Messages in the work queues, ready or unacknowledged (read on a live node)."""
        info = self.cluster.queue_info()
        return sum(info[queue][2] for queue in WORK_QUEUES if queue in info)

    def _publish(self, operation: Operation) -> None:
        # On a connection made by the app (its transport options: publisher confirms) for the
        # cluster's URL: Celery takes CELERY_BROKER_URL from the environment over its
        # configuration, and this process's names the single-node broker.
        with self.app.connection_for_write(self.cluster.url()) as connection:
            send_with(
                self.app, operation, connection=connection, confirm_timeout=PUBLISH_TIMEOUT, mandatory=True
            )

    def leader(self, queue: str) -> RabbitNode:
        """The node that leads ``queue`` now."""
        return self.cluster.node(self.cluster.queue_members()[queue][0])

    def fault_at(self) -> None:
        """Record that a fault strikes now (for the recovery times)."""
        self.faults.append(time.time())

    def recovery(self) -> tuple[float, float]:
        """The longest time without a recorded effect in ``STALL_WINDOW`` s after each fault: (p50, max)."""
        with self.engine.connect() as db:
            rows = db.execute(text("SELECT extract(epoch FROM at) FROM chaos_effects"))
            times = sorted(float(row[0]) for row in rows)
        stalls = []
        for fault in self.faults:
            points = [fault, *(t for t in times if fault < t <= fault + STALL_WINDOW)]
            stalls.append(max((b - a for a, b in itertools.pairwise(points)), default=STALL_WINDOW))
        return statistics.median(stalls), max(stalls)
