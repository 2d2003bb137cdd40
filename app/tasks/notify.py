"""Follow-up publishing for booking tasks: emails by task name (the domain's ``Notifier``), fan-outs."""

from __future__ import annotations

from typing import Any

from celery import Celery, group

from app import contracts
from app.booking.notices import Kind, Notice

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
    """Chains booking emails by name: one signature, or a group for a fan-out (publisher confirms)."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def send(self, kind: Kind, notices: list[Notice]) -> None:
        """Publish one email task per notice; returns when the broker confirmed them."""
        publish(self._app, EMAIL_TASKS[kind], [email_kwargs(kind, notice) for notice in notices])


def publish(app: Celery, task_name: str, calls: list[dict[str, Any]]) -> None:
    """Publish ``task_name`` once per keyword set, by name: one message, or a group for many."""
    signatures = [app.signature(task_name, kwargs=kwargs) for kwargs in calls]
    if len(signatures) == 1:
        signatures[0].apply_async()
    elif signatures:
        group(signatures).apply_async()
