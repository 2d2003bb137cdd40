"""The fault harness on the Redis broker: the same ledgers and counts, a private Redis instead of RabbitMQ.

The producer publishes as a producer service on Redis does (the fleet's app
built for the Redis URL: ``send_task`` with the fleet's routes, on a connection
to the private Redis, since Celery reads ``CELERY_BROKER_URL`` from the
environment over its configuration, and this process's names RabbitMQ); workers run
with the Redis URL and short time limits, so the visibility timeout after
which Redis hands a dead worker's tasks to another is 16 s instead of 4,350 s.
Queues and dead letters are read from Redis; a worker consumes while its
readiness file (``HEALTH_DIR``) is there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from kombu import Connection, Producer

from app import contracts
from app.celery_app import celery_app, create_celery
from app.settings import Settings
from routing import declare_topology, names
from routing.redis_transport import Transport
from tests.chaos.harness import WORK_QUEUES, Chaos
from tests.chaos.operations import Operation, send_with
from tests.chaos.workers import Worker
from tests.support.payment_provider import Ledger
from tests.support.redis_server import RedisServer
from tests.support.servers import PostgresCluster, RabbitNode

#: Short limits: a visibility timeout of (4 + 1) x 3 s + 1 s = 16 s (``workers.profiles``).
LIMITS = {"TASK_SOFT_TIME_LIMIT": "2", "TASK_TIME_LIMIT": "3", "REDIS_ETA_HORIZON": "1"}
#: An operation whose message is a JSON body that is not ``[args, kwargs, embed]``.
MALFORMED = "malformed"


class RedisChaos(Chaos):
    """``Chaos`` with the broker on a private Redis (its AOF on)."""

    def __init__(
        self,
        redis_server: RedisServer,
        rabbit: RabbitNode,
        postgres: PostgresCluster,
        database: str,
        tmp: Path,
        provider: tuple[str, Ledger],
    ) -> None:
        self.redis = redis_server
        super().__init__(rabbit, postgres, database, tmp, provider)
        self.app: Celery = create_celery(
            Settings(celery_broker_url=redis_server.url(), database_url=self.url)
        )
        celery_app.set_current()  # the new app made itself current

    def client(self) -> redis.Redis:
        """A new client of the private Redis (one command each; it may be down)."""
        return redis.Redis.from_url(self.redis.url(), socket_timeout=5, socket_connect_timeout=2)

    def broker(self) -> Connection:
        """A fresh kombu connection to the private Redis, through the fleet's transport."""
        return Connection(self.redis.url(), transport=Transport, connect_timeout=5)

    def reset_broker(self) -> None:
        """Empty the Redis database, then declare the topology (the bindings)."""
        with self.client() as client:
            client.flushdb()
        with self.broker() as connection:
            declare_topology(connection)

    def close(self) -> None:
        """Stop this case's workers, then the producer's connections."""
        super().close()
        self.app.close()

    def start_worker(self, role: str, *extra: str, delay: float = 0.0, **settings: str) -> Worker:
        """A worker on the private Redis with the short limits."""
        return super().start_worker(
            role, *extra, delay=delay, CELERY_BROKER_URL=self.redis.url(), **LIMITS, **settings
        )

    def consumers(self, queue: str) -> int:
        """1 while a worker of ``queue``'s profile is ready (consuming, connected to Redis), else 0.

        Redis keeps no consumer count, and asking the workers (``inspect``) would take
        this process's Celery app, whose broker is RabbitMQ's here.
        """
        return int((self.tmp / "health" / f"{queue}.ready").exists())

    def queued(self) -> int:
        """Messages in the work queue lists, plus those held by workers (kombu's unacked hash)."""
        with self.client() as client:
            return sum(int(client.llen(queue)) for queue in WORK_QUEUES) + int(client.hlen("unacked"))

    def collect_dead_letters(self) -> None:
        """Move every dead-letter list's message into ``self.dead`` (task id -> reason)."""
        with self.client() as client:
            for queue in map(names.dlq, names.WORK_QUEUES):
                while (raw := client.rpop(queue)) is not None:
                    headers: dict[str, Any] = json.loads(raw).get("headers") or {}
                    deaths = headers.get("x-death") or [{}]
                    self.dead[str(headers.get("id"))] = str(deaths[0].get("reason", "unknown"))

    def _publish(self, operation: Operation) -> None:
        if operation.task_name == MALFORMED:
            with self.broker() as connection, Producer(connection) as producer:
                producer.publish(
                    "not args, kwargs, embed", exchange=names.TASKS_EXCHANGE, serializer="json",
                    routing_key=names.routing_key(names.BOOKING, "process_payment"),
                    headers={"task": contracts.PROCESS_PAYMENT, "id": operation.task_id},
                )  # fmt: skip
            return
        with self.broker() as connection:
            send_with(self.app, operation, connection=connection)
