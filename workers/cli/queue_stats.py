"""Queue counts for ops: AMQP passive declares always, the RabbitMQ management API when reachable.

AMQP gives ready messages and consumers only. Unacknowledged counts come from
the management HTTP API (plugin ``rabbitmq_management``); without it they are
unknown, and the reason is given. A DLQ's oldest age is the ``x-death`` time
of its head message (``dead_letters.peek``, which leaves it there). Work
queues are never peeked: a read would spend one of the message's deliveries
against the queue's delivery limit, and quorum queues report no head
timestamp, so how long work waits is the ``magnetiq_task_queue_wait_seconds``
histogram workers record as tasks start.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from kombu import Connection

from app.settings import Settings, mask_url
from routing import names
from workers.cli.dead_letters import peek

#: Port of the management API when RABBITMQ_MANAGEMENT_URL does not say.
MANAGEMENT_PORT = 15672


class ManagementUnavailable(RuntimeError):
    """The management API could not be read; the message says why."""


class ManagementAPI:
    """A minimal client of the RabbitMQ management HTTP API (read-only)."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> ManagementAPI:
        """``RABBITMQ_MANAGEMENT_URL``, or the broker's host on port 15672; credentials from either."""
        broker = urlsplit(settings.celery_broker_url)
        given = urlsplit(settings.rabbitmq_management_url or f"http://{broker.hostname}:{MANAGEMENT_PORT}")
        username = unquote(given.username or broker.username or "guest")
        password = unquote(given.password or broker.password or "guest")
        netloc = given.netloc.rsplit("@", 1)[-1]
        return cls(f"{given.scheme}://{netloc}{given.path}", username, password)

    def get(self, path: str) -> Any:
        """GET one API path and decode its JSON.

        Raises:
            ManagementUnavailable: unreachable, refused, or not JSON.
        """
        request = urllib.request.Request(f"{self.base_url}/api/{path}", headers={"Authorization": self._auth})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except (OSError, ValueError) as exc:
            raise ManagementUnavailable(f"management API at {mask_url(self.base_url)}: {exc}") from exc

    def queues(self, vhost: str) -> dict[str, dict[str, Any]]:
        """Every queue of a vhost, by name."""
        return {queue["name"]: queue for queue in self.get(f"queues/{quote(vhost, safe='')}")}


@dataclass(frozen=True)
class QueueStats:
    """What ``magnetiq status`` shows of one work queue and its DLQ."""

    name: str
    ready: int
    consumers: int
    #: None when the management API is not available.
    unacked: int | None
    dlq_ready: int
    #: Seconds since the DLQ's head message was dead-lettered, None when empty.
    dlq_oldest_age: float | None


def passive_counts(connection: Connection, queue: str) -> tuple[int, int]:
    """Return (ready messages, consumers) of a queue with a passive declare."""
    with connection.channel() as channel:
        _, ready, consumers = channel.queue_declare(queue, passive=True)  # type: ignore[attr-defined]
    return int(ready), int(consumers)


def unacked(info: dict[str, Any] | None) -> int | None:
    """A queue's unacknowledged count from the API (absent until the broker first samples a new queue)."""
    value = (info or {}).get("messages_unacknowledged")
    return int(value) if isinstance(value, int) else None


def read_stats(connection: Connection, api: ManagementAPI | None) -> tuple[list[QueueStats], str | None]:
    """Read every work queue's counts.

    Returns:
        The counts, and why the management API's figures are missing (None when read or not asked).
    """
    management: dict[str, dict[str, Any]] = {}
    problem = None
    if api is not None:
        try:
            management = api.queues(connection.virtual_host)
        except ManagementUnavailable as exc:
            problem = str(exc)
    stats = []
    for queue in names.WORK_QUEUES:
        ready, consumers = passive_counts(connection, queue)
        dlq_ready, _ = passive_counts(connection, names.dlq(queue))
        head = peek(connection, names.dlq(queue), limit=1) if dlq_ready else []
        stats.append(
            QueueStats(
                name=queue,
                ready=ready,
                consumers=consumers,
                unacked=unacked(management.get(queue)),
                dlq_ready=dlq_ready,
                dlq_oldest_age=head[0].age() if head else None,
            )
        )
    return stats, problem
