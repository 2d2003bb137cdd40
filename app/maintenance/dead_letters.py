"""Dead-letter queues, read in place: the one reader, and the report of each DLQ's depth and oldest age.

Reading (``peek``) takes every ready message with ``basic.get`` and no ack,
then returns every one of them with ``basic.nack(requeue=True)``, in the order
taken: a message is never acked or removed by reading, and keeps its headers
(``x-death``) and its place. Every message is taken, not only the few asked
for, because a quorum queue serves returned messages first but in the order
they were returned: giving back only the head of messages returned earlier
would move it behind them. Each read counts as a delivery attempt on the DLQ
(``x-delivery-count`` grows); DLQs are declared without a delivery limit, so
on RabbitMQ 3.x nothing is ever dropped. RabbitMQ 4.0 gives every quorum
queue a default limit of 20, which a ``delivery-limit: -1`` policy on the DLQs
lifts (README, "Dead-letter queues"). The maintenance report and the
``magnetiq dlq`` commands both read through here.

On a Redis broker a DLQ is a list of kombu's JSON payloads, its head at the
right end (where kombu pops); reading it is ``LRANGE``, which moves nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from amqp import Message, spec
from kombu import Connection

log = logging.getLogger(__name__)
#: Properties kombu's Redis transport keeps for its own delivery, not the message's.
REDIS_DELIVERY_KEYS = ("delivery_info", "delivery_tag", "body_encoding")


@dataclass(frozen=True)
class DeadLetter:
    """One message of a DLQ, as read."""

    #: Celery task id and name (from the protocol-2 headers), None for a foreign message.
    task_id: str | None
    task: str | None
    #: Work queue the message died in, why (``rejected``, ``delivery_limit``, ...) and when.
    queue: str | None
    reason: str | None
    died_at: datetime | None
    #: How often it died in that queue.
    deaths: int
    headers: dict[str, Any] = field(repr=False)
    properties: dict[str, Any] = field(repr=False)
    body: bytes = field(repr=False)

    @classmethod
    def from_message(cls, message: Message) -> DeadLetter:
        """Read the fleet's and the broker's headers of a message taken from a DLQ."""
        properties = dict(message.properties)
        headers = dict(properties.pop("application_headers", None) or {})
        latest = (headers.get("x-death") or [{}])[0]  # the broker puts the latest death first
        died_at = latest.get("time")
        if isinstance(died_at, datetime) and died_at.tzinfo is None:
            died_at = died_at.replace(tzinfo=UTC)
        return cls(
            task_id=headers.get("id"),
            task=headers.get("task"),
            queue=latest.get("queue") or headers.get("x-first-death-queue"),
            reason=latest.get("reason") or headers.get("x-first-death-reason"),
            died_at=died_at if isinstance(died_at, datetime) else None,
            deaths=int(latest.get("count", 1 if latest else 0)),
            headers=headers,
            properties=properties,
            body=bytes(message.body) if not isinstance(message.body, str) else message.body.encode(),
        )

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> DeadLetter:
        """Read a message kept in a Redis list (kombu's payload: body, headers, properties)."""
        headers = dict(payload.get("headers") or {})
        properties = {
            key: value
            for key, value in (payload.get("properties") or {}).items()
            if key not in REDIS_DELIVERY_KEYS
        }
        properties.update(
            content_type=payload.get("content-type"), content_encoding=payload.get("content-encoding")
        )
        raw = payload.get("body") or ""
        encoded = (payload.get("properties") or {}).get("body_encoding") == "base64"
        body = base64.b64decode(raw) if encoded else str(raw).encode()
        latest = (headers.get("x-death") or [{}])[0]
        stamp = _epoch(latest.get("time"))
        return cls(
            task_id=headers.get("id"),
            task=headers.get("task"),
            queue=latest.get("queue") or headers.get("x-first-death-queue"),
            reason=latest.get("reason") or headers.get("x-first-death-reason"),
            died_at=None if stamp is None else datetime.fromtimestamp(stamp, UTC),
            deaths=int(latest.get("count", 1 if latest else 0)),
            headers=headers,
            properties=properties,
            body=body,
        )

    def age(self, now: datetime | None = None) -> float | None:
        """Seconds since the message was dead-lettered, when the broker recorded it."""
        if self.died_at is None:
            return None
        return ((now or datetime.now(UTC)) - self.died_at).total_seconds()

    def arguments(self) -> Any:
        """The task's ``[args, kwargs, embed]`` body, decoded (the raw text if it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return self.body.decode(errors="replace")


def take(channel: Any, queue: str) -> Iterator[tuple[int, DeadLetter]]:
    """Yield (delivery tag, message) for every message ready in ``queue`` now, unacked, head first.

    Every tag taken must end in ``give_back`` (all of them, in the order
    taken, to keep the queue's order; see the module docstring) or an ack,
    on the same channel.
    """
    _, ready, _ = channel.queue_declare(queue, passive=True)
    for _ in range(ready):
        message = channel.basic_get(queue, no_ack=False)
        if message is None:
            return
        yield message.delivery_tag, DeadLetter.from_message(message)


def give_back(channel: Any, tags: Iterable[int]) -> None:
    """Return every message taken to its queue, in the order taken, unchanged."""
    if not channel.is_open:
        return  # closing the channel already gave every unacked message back
    for tag in tags:
        # basic.nack (RabbitMQ's extension; py-amqp has no helper), not basic.reject:
        # RabbitMQ 4.3+ counts a reject, not a nack, against the delivery limit.
        channel.send_method(spec.Basic.Nack, "Lbb", (tag, False, True))


def is_redis(connection: Connection) -> bool:
    """Whether the broker is Redis (queues are lists) rather than RabbitMQ."""
    return bool(connection.transport.driver_type == "redis")


def redis_client(connection: Connection) -> Any:
    """The redis-py client of a Redis broker connection's default channel."""
    return connection.default_channel.client  # type: ignore[attr-defined]


def redis_head(connection: Connection, queue: str, limit: int) -> list[bytes]:
    """Up to ``limit`` raw messages from the head of a Redis list, head first, left in place."""
    if limit <= 0:
        return []
    items: list[bytes] = redis_client(connection).lrange(queue, -limit, -1)
    return items[::-1]


def peek(connection: Connection, queue: str, limit: int = 100) -> list[DeadLetter]:
    """Return up to ``limit`` messages from the head of a queue, leaving every message in its place.

    Args:
        connection: an open broker connection.
        queue: the queue to read (a DLQ; work queues have a delivery limit a read would spend).
        limit: most messages to return (every ready message is read, to keep the order).

    Returns:
        The messages, head first.
    """
    if is_redis(connection):
        return [DeadLetter.from_payload(json.loads(raw)) for raw in redis_head(connection, queue, limit)]
    tags: list[int] = []
    found: list[DeadLetter] = []
    channel: Any = connection.channel()  # py-amqp's channel (kombu types it transport-neutral)
    with channel:
        try:
            for tag, dead in take(channel, queue):
                tags.append(tag)
                if len(found) < limit:
                    found.append(dead)
        finally:
            give_back(channel, tags)
    return found


@dataclass(frozen=True)
class DeadLetterQueue:
    """One dead-letter queue as the report saw it."""

    queue: str
    #: Ready messages (a passive declare).
    messages: int
    #: Seconds since the head message was dead-lettered (or published); None when empty or unknown.
    oldest_age_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values."""
        return asdict(self)


def message_time(headers: Mapping[str, Any] | None) -> float | None:
    """Return the epoch seconds a dead-lettered message's age counts from.

    The earliest ``x-death`` time (when the broker first dead-lettered it), else
    the ``sent_at`` stamp producers put on every task message.
    """
    headers = headers or {}
    deaths = [entry.get("time") for entry in headers.get("x-death") or () if isinstance(entry, Mapping)]
    # RabbitMQ's are timestamps (datetimes here); the Redis transport's, epoch seconds.
    stamps = [stamp for stamp in map(_epoch, deaths) if stamp is not None]
    if stamps:
        return min(stamps)
    sent_at = headers.get("sent_at")
    return float(sent_at) if isinstance(sent_at, int | float) else None


def _epoch(value: object) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def inspect_queue(connection: Connection, queue: str, now: float | None = None) -> DeadLetterQueue:
    """Count a queue's messages and age its head message, leaving it in place (``peek``).

    On a Redis broker the queue is a list (oldest at its right end, where kombu
    pops), read with ``LLEN`` and ``LINDEX``.
    """
    if is_redis(connection):
        client = redis_client(connection)
        ready, oldest = client.llen(queue), client.lindex(queue, -1)
        stamp = message_time(json.loads(oldest).get("headers")) if oldest else None
    else:
        with connection.channel() as channel:
            _, ready, _ = channel.queue_declare(queue, passive=True)  # type: ignore[attr-defined]
        head = peek(connection, queue, limit=1) if ready else []
        stamp = message_time(head[0].headers) if head else None
    age = None
    if stamp is not None:
        age = max(0.0, (time.time() if now is None else now) - stamp)
    return DeadLetterQueue(queue, int(ready), age)


def report_dead_letters(connection: Connection, queues: Iterable[str]) -> list[DeadLetterQueue]:
    """Inspect every dead-letter queue in ``queues``, in order, logging a warning for each non-empty one."""
    report = [inspect_queue(connection, queue) for queue in queues]
    for queue in report:
        if queue.messages:
            log.warning(
                "dead letters waiting in %s: %d, the oldest for %s s",
                queue.queue,
                queue.messages,
                "?" if queue.oldest_age_seconds is None else f"{queue.oldest_age_seconds:.0f}",
            )
    return report
