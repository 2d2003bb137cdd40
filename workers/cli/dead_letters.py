"""Dead-letter queues on RabbitMQ: replay and purge; reading is ``app.maintenance.dead_letters``.

Reading (``peek``, re-exported here) leaves every message in place: it is the
same reader the maintenance report uses, returning messages with
``basic.nack`` (see there).

Replaying publishes a copy to the task's work queue through the fleet's
router, with its body, properties and headers, without the broker's
dead-lettering headers (``x-death``, ``x-first-death-*``, ``x-last-death-*``,
``x-delivery-count``) so a new failure dead-letters afresh, and with
``magnetiq-replays`` counting the replays. The DLQ copy is acked only after
the broker confirmed the new one (at least once: never lost, at worst twice).
On a Redis broker, ``workers.cli.redis_queues`` replays and purges instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amqp import Message
from amqp.exceptions import MessageNacked
from kombu import Connection

from app.maintenance.dead_letters import DeadLetter, give_back, peek, take
from routing import names, route_task

__all__ = [
    "DeadLetter",
    "ReplayError",
    "Replayed",
    "dlq_name",
    "peek",
    "purge",
    "replay",
    "replay_headers",
    "replay_message",
    "replay_route",
]

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


def replay_headers(dead: DeadLetter) -> dict[str, Any]:
    """The replayed copy's headers: the message's own, without the death headers, one more replay."""
    headers = {
        key: value
        for key, value in dead.headers.items()
        if key not in DEATH_HEADERS and not key.startswith(DEATH_PREFIXES)
    }
    headers[REPLAYS_HEADER] = int(dead.headers.get(REPLAYS_HEADER, 0)) + 1
    return headers


def replay_message(dead: DeadLetter) -> Message:
    """The copy to publish: same body, properties and headers, without the death headers."""
    headers = replay_headers(dead)
    properties = {key: value for key, value in dead.properties.items() if key != "expiration"}
    properties["delivery_mode"] = 2
    return Message(dead.body, application_headers=headers, **properties)


def replay_route(dead: DeadLetter) -> tuple[str, str, str]:
    """Return (exchange, routing key, work queue) the fleet's router gives this task now.

    Raises:
        ReplayError: the message names no task the fleet routes, or the
            router now sends it to another queue than the one it died in.
    """
    route = route_task(dead.task, None, None, None) if dead.task else None
    if route is None:
        raise ReplayError(f"message {dead.task_id}: task {dead.task!r} has no route; not replayed")
    if dead.queue in names.WORK_QUEUES and route["queue"] != dead.queue:
        raise ReplayError(
            f"message {dead.task_id}: died in {dead.queue} but {dead.task} now routes to {route['queue']}"
        )
    return route["exchange"], route["routing_key"], route["queue"]


def _channel(connection: Connection) -> Any:
    """A new py-amqp channel (kombu types it as the transport-neutral ``StdChannel``)."""
    return connection.channel()


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

    Each selected message among the first ``limit`` is republished
    (``replay_message``) with publisher confirms and mandatory routing, then
    acked on the DLQ; every other message, and every message of a dry run, is
    returned to the DLQ unchanged and in its place (every ready message is
    read for that, as ``peek`` does).

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
            for index, (tag, dead) in enumerate(take(source, queue)):
                held.append(tag)
                if index >= limit or not select(dead):
                    continue
                exchange, routing_key, work_queue = replay_route(dead)
                if not dry_run:
                    try:
                        target.basic_publish_confirm(
                            replay_message(dead),
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
            give_back(source, held)
    return replayed


def purge(connection: Connection, queue: str) -> int:
    """Delete every ready message of a queue; return how many were deleted."""
    with _channel(connection) as channel:
        return int(channel.queue_purge(queue) or 0)
