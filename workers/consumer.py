"""The worker's consumer: dead-letters undecodable and oversized messages instead of dropping them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer

from app.contracts import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)


class FleetConsumer(Consumer):
    """Celery's consumer, except that a body it cannot decode goes to the DLQ.

    Stock Celery logs such a message and acks it, so it is lost; rejecting it
    without requeue sends it through the queue's dead-letter exchange.
    """

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
        """Wrap Celery's task handler: a body over ``MAX_MESSAGE_BYTES`` is dead-lettered undecoded.

        Protocol 2 bodies are decoded in the pool process; refusing here keeps a
        hostile body from ever being parsed into objects.
        """
        handle = super().create_task_handler(*args, **kwargs)

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
            return handle(message)

        return on_task_received
