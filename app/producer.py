"""Producer API: the only module the FastAPI service imports to enqueue work.

Every helper validates its arguments with the same models the workers use, so
a bad call fails in the request that made it, then publishes by task name with
publisher confirms (the broker has the message when the call returns).
``enqueue_many`` (from ``app.publisher``) does the same for many calls of one
task at once: one channel, streamed confirms, an error naming every task the
broker did not confirm.
"""

from __future__ import annotations

from typing import Any

from celery.result import AsyncResult

from app import contracts
from app.celery_app import celery_app
from app.publisher import PublishError, enqueue_many

__all__ = [
    "PublishError",
    "enqueue",
    "enqueue_cancel_booking",
    "enqueue_cleanup_old_sessions",
    "enqueue_import_bookings",
    "enqueue_many",
    "enqueue_process_booking",
    "enqueue_process_payment",
    "enqueue_welcome_email",
]


def enqueue(task_name: str, model: type[contracts.Arguments], **arguments: Any) -> AsyncResult[Any]:
    """Validate ``arguments`` against ``model`` and publish ``task_name``.

    Raises:
        contracts.InvalidTaskArguments: the arguments can never be valid.
    """
    validated = contracts.validate_arguments(task_name, model, arguments)
    return celery_app.send_task(task_name, kwargs=validated.model_dump(mode="json"))


def enqueue_welcome_email(user_email: str, user_name: str) -> AsyncResult[Any]:
    """Queue the welcome email for a new user."""
    return enqueue(
        contracts.SEND_WELCOME_EMAIL, contracts.WelcomeEmailArgs, user_email=user_email, user_name=user_name
    )


def enqueue_process_payment(payment_id: int) -> AsyncResult[Any]:
    """Queue processing of a pending payment (idempotent)."""
    return enqueue(contracts.PROCESS_PAYMENT, contracts.ProcessPaymentArgs, payment_id=payment_id)


def enqueue_process_booking(
    reference: str, user_id: int, slot_id: int, amount_cents: int, currency: str = "EUR"
) -> AsyncResult[Any]:
    """Queue a booking: reserve the slot, charge ``amount_cents`` (0: free), confirm, email.

    ``reference`` is the booking's idempotency key: publishing it again books nothing new.
    """
    return enqueue(
        contracts.PROCESS_BOOKING,
        contracts.ProcessBookingArgs,
        reference=reference,
        user_id=user_id,
        slot_id=slot_id,
        amount_cents=amount_cents,
        currency=currency,
    )


def enqueue_cancel_booking(booking_id: int, reason: str | None = None) -> AsyncResult[Any]:
    """Queue a cancellation (refund when paid, cancellation email)."""
    return enqueue(
        contracts.CANCEL_BOOKING, contracts.CancelBookingArgs, booking_id=booking_id, reason=reason
    )


def enqueue_import_bookings(import_id: int) -> AsyncResult[Any]:
    """Queue the import of an uploaded CSV stored with ``app.booking.imports.create_import``."""
    return enqueue(contracts.IMPORT_BOOKINGS, contracts.ImportArgs, import_id=import_id)


def enqueue_cleanup_old_sessions() -> AsyncResult[Any]:
    """Queue a session cleanup now (beat also runs it daily)."""
    return enqueue(contracts.CLEANUP_OLD_SESSIONS, contracts.NoArgs)
