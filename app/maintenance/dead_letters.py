"""The dead-letter report: how many messages each DLQ holds and how long the oldest has waited."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from kombu import Connection

log = logging.getLogger(__name__)


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

    The earliest ``x-death`` time (when RabbitMQ first dead-lettered it), else
    the ``sent_at`` stamp producers put on every task message.
    """
    headers = headers or {}
    deaths = [entry.get("time") for entry in headers.get("x-death") or () if isinstance(entry, Mapping)]
    stamps = [death.timestamp() for death in deaths if isinstance(death, datetime)]
    if stamps:
        return min(stamps)
    sent_at = headers.get("sent_at")
    return float(sent_at) if isinstance(sent_at, int | float) else None


def inspect_queue(connection: Connection, queue: str, now: float | None = None) -> DeadLetterQueue:
    """Count a queue's messages and age its head message without consuming it.

    The head is fetched unacknowledged and rejected with requeue on the same
    channel, so it stays in the queue, at its head.
    """
    with connection.channel() as channel:
        _, ready, _ = channel.queue_declare(queue, passive=True)  # type: ignore[attr-defined]
        age = None
        if ready:
            head = channel.basic_get(queue, no_ack=False)  # type: ignore[attr-defined]
            if head is not None:
                try:
                    stamp = message_time(head.headers)
                finally:
                    channel.basic_reject(head.delivery_tag, requeue=True)  # type: ignore[attr-defined]
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
