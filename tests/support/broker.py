"""The fleet's queues as the tests see them on the broker: depth, consumers, purge."""

from __future__ import annotations

from kombu import Connection

from routing.topology import DEAD_LETTER_QUEUES, TASK_QUEUES

#: Every fleet queue: the work queues and their dead-letter queues.
ALL_QUEUES = [q.name for q in (*TASK_QUEUES, *DEAD_LETTER_QUEUES)]


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
