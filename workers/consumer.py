"""The worker's consumer: dead-letters bad and oversized messages; green pools poll events."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker import loops
from celery.worker.consumer import Consumer

from app.contracts import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

#: Seconds the green pools' consumer loop waits on the event connection per turn.
EVENT_DRAIN_SECONDS = 0.001
#: Seconds the green pools' consumer loop waits for a message before it looks at its
#: stop flag again (Celery's loop waits 2 s, so every warm shutdown began up to 2 s late).
TASK_DRAIN_SECONDS = 0.25
_celery_quick_drain = loops._quick_drain  # type: ignore[attr-defined]


def _drain_event_connection(connection: Any, timeout: float = EVENT_DRAIN_SECONDS) -> None:
    # Celery's green-pool loop (synloop) drains the event connection after every
    # message with a 0.1 s timeout, to read the broker's heartbeats. With task
    # events off nothing else arrives there, so each message waited 0.1 s: a
    # gevent worker could start at most 10 tasks a second. Polling reads the
    # heartbeats as well.
    _celery_quick_drain(connection, timeout=min(timeout, EVENT_DRAIN_SECONDS))


class FleetConsumer(Consumer):
    """Celery's consumer, except that a body it cannot decode goes to the DLQ.

    Stock Celery logs such a message and acks it, so it is lost; rejecting it
    without requeue sends it through the queue's dead-letter exchange. Under a
    green pool it also polls the event connection instead of waiting 0.1 s on
    it after every message (see ``_drain_event_connection``), and looks at its
    stop flag every ``TASK_DRAIN_SECONDS`` instead of every 2 s.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if getattr(self, "loop", None) is loops.synloop:  # gevent/eventlet: no hub
            loops._quick_drain = _drain_event_connection  # type: ignore[attr-defined]

    def connect(self) -> Any:
        """Connect; under a green pool the loop's waits for a message are capped (``TASK_DRAIN_SECONDS``)."""
        connection = super().connect()
        if getattr(self, "loop", None) is loops.synloop:
            drain = connection.drain_events

            def drain_briefly(timeout: float | None = None, **kwargs: Any) -> Any:
                # Only a bounded wait is shortened: a caller that waits forever still does.
                capped = None if timeout is None else min(timeout, TASK_DRAIN_SECONDS)
                return drain(timeout=capped, **kwargs)

            connection.drain_events = drain_briefly  # type: ignore[method-assign]  # this connection only
        return connection

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """Reject the message to its dead-letter queue and say why."""
        log.error(
            "rejected undecodable message to the dead-letter queue: %s (content type %r, %d bytes)",
            exc,
            message.content_type,
            len(message.body or b""),
        )
        message.reject(requeue=False)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        """Wrap Celery's task handler: oversized and malformed messages are dead-lettered.

        A body over ``MAX_MESSAGE_BYTES`` is refused before it is decoded, so a
        hostile body is never parsed into objects. A message Celery cannot turn
        into a request (a protocol 2 body that is not ``[args, kwargs, embed]``)
        makes stock Celery raise out of its consumer: the worker stops with an
        "Unrecoverable error", the message goes back to the queue, and the next
        worker to take it stops too. Here it is dead-lettered and the worker
        goes on.
        """
        handle = super().create_task_handler(*args, **kwargs)
        broker_errors = (*self.connection_errors, *self.channel_errors)  # type: ignore[attr-defined]

        def on_task_received(message: Any) -> Any:
            size = len(message.body or b"")
            if size > MAX_MESSAGE_BYTES:
                log.error(
                    "rejected oversized message to the dead-letter queue: %d bytes (cap %d)",
                    size,
                    MAX_MESSAGE_BYTES,
                )
                message.reject(requeue=False)
                return None
            try:
                return handle(message)
            except broker_errors:
                raise
            except Exception:
                if message.acknowledged:
                    raise
                log.exception(
                    "rejected malformed message to the dead-letter queue: task %r, id %r",
                    message.headers.get("task"),
                    message.headers.get("id"),
                )
                message.reject(requeue=False)
                return None

        return on_task_received
