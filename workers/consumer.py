"""The worker's consumer: dead-letters undecodable messages instead of dropping them."""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

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
