"""kombu declarations of the exchanges and queues, and the idempotent declare step."""

from __future__ import annotations

from typing import Any

from kombu import Connection, Exchange, Queue

from routing import names

#: Redeliveries a message gets before RabbitMQ dead-letters it (its process kept dying).
DELIVERY_LIMITS = {names.EMAIL: 5, names.BULK: 5, names.BOOKING: 3, names.MAINTENANCE: 3}

TASKS = Exchange(names.TASKS_EXCHANGE, type="topic", durable=True)
DLX = Exchange(names.DLX_EXCHANGE, type="topic", durable=True)
#: Celery's event exchange, declared as Celery declares it (``celery.events.event``),
#: so a producer's ``task-sent`` event finds it without configure rights.
EVENTS = Exchange(names.EVENTS_EXCHANGE, type="topic", durable=True)


def _work_queue(name: str) -> Queue:
    return Queue(
        name,
        TASKS,
        routing_key=names.binding_key(name),
        durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": names.DLX_EXCHANGE,
            "x-dead-letter-routing-key": names.dlq(name),
            "x-delivery-limit": DELIVERY_LIMITS[name],
            # at-least-once dead-lettering needs reject-publish overflow: a full
            # queue refuses new work (the producer sees a nack) instead of
            # silently dropping the oldest message.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )


def _dead_letter_queue(name: str) -> Queue:
    return Queue(
        names.dlq(name),
        DLX,
        routing_key=names.dlq(name),
        durable=True,
        queue_arguments={"x-queue-type": "quorum"},
    )


EMAIL = _work_queue(names.EMAIL)
BULK = _work_queue(names.BULK)
BOOKING = _work_queue(names.BOOKING)
MAINTENANCE = _work_queue(names.MAINTENANCE)

#: The queues workers consume, handed to Celery as ``task_queues``.
TASK_QUEUES = (EMAIL, BULK, BOOKING, MAINTENANCE)
#: Dead-letter queues; declared with the topology, never consumed by workers.
DEAD_LETTER_QUEUES = tuple(_dead_letter_queue(q) for q in names.WORK_QUEUES)


def queue_arguments(name: str) -> dict[str, Any]:
    """Return the declared arguments of any fleet queue, by name."""
    for queue in (*TASK_QUEUES, *DEAD_LETTER_QUEUES):
        if queue.name == name:
            return dict(queue.queue_arguments or {})
    raise KeyError(name)


def declare_topology(connection: Connection) -> list[str]:
    """Declare the exchanges and every queue with its binding; safe to repeat.

    Args:
        connection: an open kombu connection with configure rights on the vhost.

    Returns:
        The names of the entities declared, exchanges first.
    """
    declared: list[str] = []
    with connection.channel() as channel:
        for exchange in (TASKS, DLX, EVENTS):
            exchange.bind(channel).declare()
            declared.append(exchange.name)
        for queue in (*TASK_QUEUES, *DEAD_LETTER_QUEUES):
            queue.bind(channel).declare()
            declared.append(queue.name)
    return declared
