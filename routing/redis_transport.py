"""kombu's Redis transport, except that a rejected message goes to its queue's dead-letter list.

kombu's Redis transport drops a message rejected without requeue: it removes
it from the unacked hash and acks it. RabbitMQ would route it through the
queue's dead-letter exchange instead, and the fleet relies on that for every
message it gives up on: a failed task (``task_acks_on_failure=False``), a task
killed by its time limit, an undecodable or oversized body, an unknown task
name. Here the rejection moves the message to ``<queue>.dlq`` (the list kombu
reads as that queue) with RabbitMQ's ``x-death`` headers, in one Redis
transaction with its removal from the unacked hash: it is in exactly one place.

A quorum queue also counts failed deliveries and dead-letters a message past
its ``x-delivery-limit``; kombu's Redis transport puts a message back forever.
Here a message that comes back because its delivery failed (a requeue, as
when a task's process is killed, or a visibility timeout that ran out on a
dead worker) gets ``x-delivery-count`` one higher, and past its queue's limit
(``routing.topology.DELIVERY_LIMITS``) goes to the dead-letter list with the
reason ``delivery_limit``. Prefetched messages handed back when a consumer
closes its channel (a warm shutdown) were never tried and are not counted.

Select it with a ``redis://``, ``rediss://`` or ``sentinel://`` broker URL;
``app.celery_app`` names the class as Celery's ``broker_transport``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import redis, virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from routing import names
from routing.topology import DELIVERY_LIMITS

log = logging.getLogger(__name__)
#: The fleet's exchanges, all topic exchanges (``routing.topology``).
TOPIC_EXCHANGES = dict.fromkeys((names.TASKS_EXCHANGE, names.DLX_EXCHANGE), "topic")
#: Failed deliveries of a message so far, as a quorum queue counts them.
DELIVERY_COUNT = "x-delivery-count"
#: Headers RabbitMQ sets on a message it dead-letters, set here the same way.
FIRST_DEATH = ("x-first-death-reason", "x-first-death-queue", "x-first-death-exchange")


def queue_of(routing_key: str) -> str:
    """The work queue a message was routed to: the first word of its routing key.

    The fleet's routing keys are ``<queue>.<task>`` and its bindings
    ``<queue>.#``; a key published straight to a queue is that queue's name.
    """
    return routing_key.split(".", 1)[0]


def dead_lettered(payload: dict[str, Any], exchange: str, routing_key: str, reason: str) -> dict[str, Any]:
    """The message as RabbitMQ dead-letters it: ``x-death`` (latest first) and ``x-first-death-*``."""
    headers = payload.setdefault("headers", {})
    queue = queue_of(routing_key)
    deaths = [d for d in headers.get("x-death") or () if isinstance(d, dict)]
    same = next((d for d in deaths if d.get("queue") == queue and d.get("reason") == reason), None)
    if same is not None:
        deaths.remove(same)
    entry = {
        "count": int(same["count"]) + 1 if same is not None else 1,
        "reason": reason,
        "queue": queue,
        "time": int(time.time()),
        "exchange": exchange,
        "routing-keys": [routing_key],
    }
    headers["x-death"] = [entry, *deaths]
    for header, value in zip(FIRST_DEATH, (reason, queue, exchange), strict=True):
        headers.setdefault(header, value)
    headers["x-last-death-reason"], headers["x-last-death-queue"] = reason, queue
    return payload


def over_limit(payload: dict[str, Any], routing_key: str) -> bool:
    """Count one more failed delivery in the message's headers; True once past its queue's limit."""
    headers = payload.setdefault("headers", {})
    count = int(headers.get(DELIVERY_COUNT) or 0) + 1
    headers[DELIVERY_COUNT] = count
    limit = DELIVERY_LIMITS.get(queue_of(routing_key))
    return limit is not None and count > limit


class QoS(redis.QoS):
    """Acks as kombu does; a reject without requeue dead-letters instead of dropping."""

    def restore_unacked(self, client: Any = None) -> None:
        """Hand back what this channel holds as kombu does, without counting a failed delivery."""
        channel: DeliveryLimit = self.channel  # type: ignore[assignment]  # always one of ours
        channel.counting_deliveries = False
        try:
            super().restore_unacked(client)
        finally:
            channel.counting_deliveries = True

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Requeue as kombu does, or move the message to its queue's dead-letter list."""
        if requeue:
            super().reject(delivery_tag, requeue=True)
            return
        self.dead_letter(delivery_tag, "rejected")
        virtual.QoS.ack(self, delivery_tag)

    def dead_letter(self, delivery_tag: str, reason: str) -> None:
        """Move one unacked message to ``<queue>.dlq`` atomically (WATCH/MULTI on the unacked hash)."""

        def move(pipe: Any) -> None:
            stored = pipe.hget(self.unacked_key, delivery_tag)
            pipe.multi()
            self._remove_from_indices(delivery_tag, pipe)  # type: ignore[attr-defined]  # kombu's, pinned
            if stored:
                payload, exchange, routing_key = loads(bytes_to_str(stored))
                target = names.dlq(queue_of(routing_key))
                pipe.lpush(target, dumps(dead_lettered(payload, exchange, routing_key, reason)))
                log.warning("dead-lettered message %s to %s (%s)", delivery_tag, target, reason)

        with self.channel.conn_or_acquire() as client:  # type: ignore[attr-defined]
            client.transaction(move, self.unacked_key)


class Unroutable(ChannelError):
    """No queue is bound for a task's routing key: kombu's Redis transport would drop it silently."""


class DeliveryLimit:
    """A restored message's failed delivery counted; past the limit, dead-lettered instead."""

    #: False while a closing channel hands back what it prefetched (``QoS.restore_unacked``).
    counting_deliveries = True

    def _do_restore_message(
        self, payload: dict[str, Any], exchange: str, routing_key: str, pipe: Any, leftmost: bool = False
    ) -> None:
        if self.counting_deliveries and over_limit(payload, routing_key):
            target = names.dlq(queue_of(routing_key))
            pipe.lpush(target, dumps(dead_lettered(payload, exchange, routing_key, "delivery_limit")))
            log.warning("dead-lettered message to %s past its delivery limit", target)
            return
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)  # type: ignore[misc]

    def close(self) -> None:
        """Close as kombu does, then the pool kombu opened anew to hand back unacked messages.

        kombu disconnects the channel's pools before the restore, which opens a new one
        and leaves its socket open.
        """
        try:
            super().close()  # type: ignore[misc]
        finally:
            self._disconnect_pools()  # type: ignore[attr-defined]  # kombu's, pinned


class OutlivesItsConnection:
    """A channel that can still reach Redis after its connection was lost and collected.

    On a lost connection Celery collects the kombu connection (its transport's
    ``client`` becomes None), then closes it: the channel's close hands back
    the messages it holds and, later, tasks still running ack theirs, and both
    build their Redis client from that ``client``. kombu then raised
    ``AttributeError``, which stopped the worker with an "Unrecoverable error"
    and left the acks undone. Here the channel keeps the connection parameters
    it first built and uses them once the connection is gone.
    """

    _kept_connparams: dict[bool, dict[str, Any]]

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        kept = self.__dict__.setdefault("_kept_connparams", {})
        if self.connection.client is None and asynchronous in kept:  # type: ignore[attr-defined]
            return dict(kept[asynchronous])
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[misc]
        kept[asynchronous] = dict(params)
        return params


class FleetRouting:
    """Routing on the fleet's exchanges as RabbitMQ does it, for kombu's in-process exchanges.

    On Redis an exchange's type lives in each process's memory, set when that
    process declares it. A producer declares nothing (workers and ``magnetiq
    topology apply`` do), so kombu would route the fleet's topic exchanges as
    direct ones and match no binding. And a message no binding matches is
    dropped without a word, where RabbitMQ returns a ``mandatory`` one: here
    publishing it raises ``Unroutable``.
    """

    _publishing = False

    def typeof(self, exchange: str, default: str = "direct") -> Any:
        """The exchange's type: declared in this process, else the fleet's, else ``default``."""
        return super().typeof(exchange, default=TOPIC_EXCHANGES.get(exchange, default))  # type: ignore[misc]

    def basic_publish(self, message: Any, exchange: str, routing_key: str, **kwargs: Any) -> Any:
        """Publish as kombu does; raise ``Unroutable`` where no queue takes a fleet message."""
        self._publishing = True
        try:
            return super().basic_publish(message, exchange, routing_key, **kwargs)  # type: ignore[misc]
        finally:
            self._publishing = False

    def _lookup(self, exchange: str, routing_key: str, default: Any = None) -> Any:
        queues = super()._lookup(exchange, routing_key, default)  # type: ignore[misc]
        if not queues and self._publishing and exchange in TOPIC_EXCHANGES:
            raise Unroutable(
                f"no queue is bound for routing key {routing_key!r} on {exchange} "
                "(run `magnetiq topology apply`)"
            )
        return queues


class Channel(OutlivesItsConnection, DeliveryLimit, FleetRouting, redis.Channel):
    """kombu's Redis channel with the fleet's routing, delivery limit and dead-lettering ``QoS``."""

    QoS = QoS


class Transport(redis.Transport):
    """kombu's Redis transport (``redis://``, ``rediss://``) with the dead-lettering channel."""

    Channel = Channel


class SentinelChannel(OutlivesItsConnection, DeliveryLimit, FleetRouting, redis.SentinelChannel):
    """kombu's Sentinel channel with the fleet's routing, delivery limit and dead-lettering ``QoS``."""

    QoS = QoS


class SentinelTransport(redis.SentinelTransport):
    """kombu's Sentinel transport (``sentinel://``) with the dead-lettering channel."""

    Channel = SentinelChannel
