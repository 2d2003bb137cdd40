"""Dead-letter queues: read without losing a message, replay to the work queue, purge.

Reading (``peek``) takes messages with ``basic.get`` and no ack, then returns
every one of them with ``basic.nack(requeue=True)``, in order: a message is
never acked or removed by reading. Each read counts as a delivery attempt on
the DLQ (``x-delivery-count`` grows); DLQs are declared without a delivery
limit, so on RabbitMQ 3.x nothing is ever dropped. RabbitMQ 4.0 gives every
quorum queue a default limit of 20, which a ``delivery-limit: -1`` policy on
the DLQs lifts (README, "Dead-letter queues").

Replaying publishes a copy to the task's work queue through the fleet's
router, with its body, properties and headers, without the broker's
dead-lettering headers (``x-death``, ``x-first-death-*``, ``x-last-death-*``,
``x-delivery-count``) so a new failure dead-letters afresh, and with
``magnetiq-replays`` counting the replays. The DLQ copy is acked only after
the broker confirmed the new one (at least once: never lost, at worst twice).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from amqp import Message, spec
from amqp.exceptions import MessageNacked
from kombu import Connection

from routing import names, route_task

#: Quorum queues' own delivery counter; the broker sets it.
DELIVERY_COUNT = "x-delivery-count"
#: Headers the broker adds when it dead-letters or redelivers; a replayed message starts without them.
DEATH_HEADERS = ("x-death", DELIVERY_COUNT)
#: Header prefixes of the same kind.
DEATH_PREFIXES = ("x-first-death-", "x-last-death-")
#: Header counting how often a message was replayed from a DLQ.
REPLAYS_HEADER = "magnetiq-replays"
#: Seconds to wait for the broker to confirm a replayed message.
CONFIRM_TIMEOUT = 10.0


class ReplayError(RuntimeError):
    """A message could not be replayed; it stays in the DLQ."""


def dlq_name(queue: str) -> str:
    """Resolve ``booking`` or ``booking.dlq`` to the DLQ name, refusing any other queue."""
    for work_queue in names.WORK_QUEUES:
        if queue in (work_queue, names.dlq(work_queue)):
            return names.dlq(work_queue)
    choices = ", ".join(names.WORK_QUEUES)
    raise ValueError(f"{queue!r} is not a fleet queue; one of {choices} (or their .dlq)")


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

    def replay_message(self) -> Message:
        """The copy to publish: same body, properties and headers, without the death headers."""
        headers = {
            key: value
            for key, value in self.headers.items()
            if key not in DEATH_HEADERS and not key.startswith(DEATH_PREFIXES)
        }
        headers[REPLAYS_HEADER] = int(self.headers.get(REPLAYS_HEADER, 0)) + 1
        properties = {key: value for key, value in self.properties.items() if key != "expiration"}
        properties["delivery_mode"] = 2
        return Message(self.body, application_headers=headers, **properties)

    def route(self) -> tuple[str, str, str]:
        """Return (exchange, routing key, work queue) the fleet's router gives this task now.

        Raises:
            ReplayError: the message names no task the fleet routes, or the
                router now sends it to another queue than the one it died in.
        """
        route = route_task(self.task, None, None, None) if self.task else None
        if route is None:
            raise ReplayError(f"message {self.task_id}: task {self.task!r} has no route; not replayed")
        if self.queue in names.WORK_QUEUES and route["queue"] != self.queue:
            raise ReplayError(
                f"message {self.task_id}: died in {self.queue} but {self.task} now routes to {route['queue']}"
            )
        return route["exchange"], route["routing_key"], route["queue"]


def _channel(connection: Connection) -> Any:
    """A new py-amqp channel (kombu types it as the transport-neutral ``StdChannel``)."""
    return connection.channel()


def _take(channel: Any, queue: str, limit: int) -> Iterable[tuple[int, DeadLetter]]:
    """Yield (delivery tag, message) for up to ``limit`` messages, unacked, head first."""
    for _ in range(limit):
        message = channel.basic_get(queue, no_ack=False)
        if message is None:
            return
        yield message.delivery_tag, DeadLetter.from_message(message)


def _return_all(channel: Any, tags: list[int]) -> None:
    """Give every message taken back to its queue, in the order taken."""
    if not channel.is_open:
        return  # closing the channel already gave every unacked message back
    for tag in tags:
        # basic.nack (RabbitMQ's extension; py-amqp has no helper), not basic.reject:
        # RabbitMQ 4.3+ counts a reject, not a nack, against the delivery limit.
        channel.send_method(spec.Basic.Nack, "Lbb", (tag, False, True))


def peek(connection: Connection, queue: str, limit: int = 100) -> list[DeadLetter]:
    """Read up to ``limit`` messages from the head of a queue and leave them all there.

    Args:
        connection: an open broker connection.
        queue: the queue to read (a DLQ; work queues have a delivery limit a read would spend).
        limit: most messages to read.

    Returns:
        The messages, head first.
    """
    tags: list[int] = []
    found: list[DeadLetter] = []
    with connection.channel() as channel:
        try:
            for tag, dead in _take(channel, queue, limit):
                tags.append(tag)
                found.append(dead)
        finally:
            _return_all(channel, tags)
    return found


@dataclass(frozen=True)
class Replayed:
    """What ``replay`` did (or, in a dry run, would do) with one message."""

    dead: DeadLetter
    queue: str
    routing_key: str
    done: bool


def replay(
    connection: Connection,
    queue: str,
    *,
    limit: int = 100,
    select: Callable[[DeadLetter], bool] = lambda _: True,
    dry_run: bool = False,
) -> list[Replayed]:
    """Move selected messages from a DLQ back to their work queues.

    Each selected message is republished (``replay_message``) with publisher
    confirms and mandatory routing, then acked on the DLQ; every other message
    read, and every message of a dry run, is returned to the DLQ unchanged.

    Raises:
        ReplayError: a message could not be routed or was not confirmed; it and
            every message after it stay in the DLQ.
    """
    replayed: list[Replayed] = []
    held: list[int] = []  # taken from the DLQ and not acked: returned at the end
    with _channel(connection) as source, _channel(connection) as target:
        returned: list[Any] = []
        target.events["basic_return"].add(lambda exc, *_: returned.append(exc))
        try:
            for tag, dead in _take(source, queue, limit):
                held.append(tag)
                if not select(dead):
                    continue
                exchange, routing_key, work_queue = dead.route()
                if not dry_run:
                    try:
                        target.basic_publish_confirm(
                            dead.replay_message(),
                            exchange=exchange,
                            routing_key=routing_key,
                            mandatory=True,
                            confirm_timeout=CONFIRM_TIMEOUT,
                        )
                    except (MessageNacked, TimeoutError) as exc:
                        raise ReplayError(
                            f"message {dead.task_id}: the broker did not confirm it ({exc!r})"
                        ) from exc
                    if returned:
                        raise ReplayError(f"message {dead.task_id}: {routing_key!r} is unroutable")
                    source.basic_ack(tag)
                    held.remove(tag)
                replayed.append(Replayed(dead, work_queue, routing_key, done=not dry_run))
        finally:
            _return_all(source, held)
    return replayed


def purge(connection: Connection, queue: str) -> int:
    """Delete every ready message of a queue; return how many were deleted."""
    with _channel(connection) as channel:
        return int(channel.queue_purge(queue) or 0)
