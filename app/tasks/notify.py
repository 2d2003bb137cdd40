"""Follow-up publishing for booking tasks: emails by task name (the domain's ``Notifier``), fan-outs.

Both go through the fleet's publish core (``app.producer``): validated with the
task's own model, ``mandatory``, confirmed before the calling task returns.
"""

from __future__ import annotations

from typing import Any

from kombu.utils.uuid import uuid

from app import contracts
from app.booking.notices import Kind, Notice
from app.producer import enqueue_many
from app.producer import publish as publish_one

#: The email task each kind of booking email is sent by (queue ``email``).
EMAIL_TASKS: dict[Kind, str] = {
    "confirmation": contracts.SEND_BOOKING_CONFIRMATION,
    "reminder": contracts.SEND_BOOKING_REMINDER,
    "cancellation": contracts.SEND_BOOKING_CANCELLATION,
    "expired": contracts.SEND_BOOKING_EXPIRED,
}


def email_kwargs(kind: Kind, notice: Notice) -> dict[str, Any]:
    """The keyword arguments of the email task of ``kind`` for one booking."""
    kwargs: dict[str, Any] = {
        "to": notice.to,
        "name": notice.name,
        "booking_ref": notice.booking_ref,
        "resource": notice.resource,
        "starts_at": notice.starts_at,
        "idempotency_key": notice.idempotency_key(kind),
    }
    if kind == "cancellation":
        kwargs["reason"] = notice.reason
    elif kind != "expired":  # the expiry notice names the start only
        kwargs["ends_at"] = notice.ends_at
    return kwargs


class EmailNotifier:
    """Publishes booking emails by name: one task, or a group for a fan-out (publisher confirms)."""

    def send(self, kind: Kind, notices: list[Notice]) -> None:
        """Publish one email task per notice; returns when the broker confirmed them."""
        publish(EMAIL_TASKS[kind], [email_kwargs(kind, notice) for notice in notices])


def publish(task_name: str, calls: list[dict[str, Any]]) -> None:
    """Publish ``task_name`` once per keyword set: one message, or a group for many.

    Raises:
        contracts.InvalidTaskArguments: a call is invalid; nothing was published.
        app.publisher.PublishError: the broker did not confirm some of a group
            (the error names each; the calling task fails with it).
    """
    if len(calls) == 1:
        publish_one(task_name, None, calls[0])
    elif calls:
        enqueue_many(task_name, calls, group_id=uuid())
