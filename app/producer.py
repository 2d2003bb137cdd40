"""Producer API: the only module the FastAPI service imports to enqueue work.

Every helper validates its arguments with the same models the workers use, so
a bad call fails in the request that made it, then publishes by task name with
publisher confirms (the broker has the message when the call returns).
``enqueue_many`` (from ``app.publisher``) does the same for many calls of one
task at once: one channel, streamed confirms, an error naming every task the
broker did not confirm.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from celery.result import AsyncResult
from kombu import Producer

from app import contracts
from app.celery_app import celery_app
from app.publisher import PublishError, enqueue_many

__all__ = [
    "PublishError",
    "enqueue",
    "enqueue_booking_cancellation",
    "enqueue_booking_confirmation",
    "enqueue_booking_expired",
    "enqueue_booking_reminder",
    "enqueue_cancel_booking",
    "enqueue_cleanup_old_sessions",
    "enqueue_import_bookings",
    "enqueue_many",
    "enqueue_password_reset",
    "enqueue_process_booking",
    "enqueue_process_payment",
    "enqueue_welcome_email",
    "publish",
    "send",
]

#: Seconds a publish may take by default: each broker confirm wait, each socket
#: read and write, and each connection attempt; with at most 3 reconnects the
#: call returns or raises within a few multiples of it, never blocking a request forever.
PUBLISH_TIMEOUT = 5.0
#: How often ``publish`` reconnects and republishes before it raises.
PUBLISH_RETRIES = 3


def publish(
    task_name: str,
    model: type[contracts.Arguments],
    arguments: Mapping[str, Any],
    *,
    task_id: str | None = None,
    timeout: float = PUBLISH_TIMEOUT,
) -> AsyncResult[Any]:
    """Validate ``arguments`` and publish ``task_name``; return once the broker confirmed it.

    Args:
        task_name: the task's dotted name (a ``contracts`` constant).
        model: the task's argument model.
        arguments: the task's keyword arguments.
        task_id: the id to publish under; a caller that retries after an error
            passes the same id again, so the task runs once whatever the first try did.
        timeout: seconds each confirm wait and each connection attempt may take.

    Raises:
        contracts.InvalidTaskArguments: the arguments can never be valid.
        kombu.exceptions.OperationalError: the broker could not be reached in time
            (the task may or may not be queued: publish again with the same ``task_id``).
        TimeoutError: the broker did not confirm in time (same advice).
    """
    validated = contracts.validate_arguments(task_name, model, dict(arguments))
    # None is every optional argument's default: leave it out, so messages stay as before.
    kwargs = validated.model_dump(mode="json", exclude_none=True)
    return send(task_name, kwargs, task_id=task_id, timeout=timeout)


def send(
    task_name: str,
    kwargs: dict[str, Any],
    *,
    task_id: str | None = None,
    timeout: float = PUBLISH_TIMEOUT,
    producer: Producer | None = None,
    headers: dict[str, Any] | None = None,
    expires: datetime | None = None,
) -> AsyncResult[Any]:
    """Publish already validated JSON ``kwargs`` with publisher confirms, bounded as ``publish`` is.

    Nothing is declared: workers and ``magnetiq topology apply`` own the
    topology, so a producer needs write access to ``magnetiq.tasks`` alone.
    ``producer`` publishes on a connection of the caller's (its pool by default);
    ``headers`` are added to the message's, and past ``expires`` a worker drops it unstarted.

    Raises:
        amqp.exceptions.ChannelError: no queue is bound for the task (``NO_ROUTE``;
            run ``magnetiq topology apply``), or the broker refused the publish.
        kombu.exceptions.OperationalError: the broker could not be reached in time.
        TimeoutError: the broker did not confirm in time.
    """
    return celery_app.send_task(
        task_name,
        kwargs=kwargs,
        task_id=task_id,
        producer=producer,
        headers=headers,
        expires=expires,
        declare=[],
        mandatory=True,  # no queue bound: the broker returns it and this raises, never a silent drop
        timeout=timeout,
        confirm_timeout=timeout,
        retry=True,
        retry_policy={
            "max_retries": PUBLISH_RETRIES,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
    )


def enqueue(task_name: str, model: type[contracts.Arguments], **arguments: Any) -> AsyncResult[Any]:
    """Validate ``arguments`` against ``model`` and publish ``task_name``.

    Raises:
        contracts.InvalidTaskArguments: the arguments can never be valid.
    """
    return publish(task_name, model, arguments)


def enqueue_welcome_email(
    user_email: str, user_name: str, idempotency_key: str | None = None
) -> AsyncResult[Any]:
    """Queue the welcome email for a new user (sent once per ``idempotency_key``, else per task)."""
    return enqueue(
        contracts.SEND_WELCOME_EMAIL,
        contracts.WelcomeEmailArgs,
        user_email=user_email,
        user_name=user_name,
        idempotency_key=idempotency_key,
    )


def enqueue_booking_confirmation(
    to: str,
    name: str,
    booking_ref: str,
    resource: str,
    starts_at: str,
    ends_at: str,
    idempotency_key: str | None = None,
) -> AsyncResult[Any]:
    """Queue a booking confirmation with its ``.ics`` invitation (times: ISO-8601 with offset)."""
    return enqueue(
        contracts.SEND_BOOKING_CONFIRMATION,
        contracts.BookingConfirmationArgs,
        to=to,
        name=name,
        booking_ref=booking_ref,
        resource=resource,
        starts_at=starts_at,
        ends_at=ends_at,
        idempotency_key=idempotency_key,
    )


def enqueue_booking_reminder(
    to: str,
    name: str,
    booking_ref: str,
    resource: str,
    starts_at: str,
    ends_at: str,
    idempotency_key: str | None = None,
) -> AsyncResult[Any]:
    """Queue a reminder of an upcoming booking."""
    return enqueue(
        contracts.SEND_BOOKING_REMINDER,
        contracts.BookingReminderArgs,
        to=to,
        name=name,
        booking_ref=booking_ref,
        resource=resource,
        starts_at=starts_at,
        ends_at=ends_at,
        idempotency_key=idempotency_key,
    )


def enqueue_booking_cancellation(
    to: str,
    name: str,
    booking_ref: str,
    resource: str,
    starts_at: str,
    reason: str | None = None,
    idempotency_key: str | None = None,
) -> AsyncResult[Any]:
    """Queue a booking cancellation notice."""
    return enqueue(
        contracts.SEND_BOOKING_CANCELLATION,
        contracts.BookingCancellationArgs,
        to=to,
        name=name,
        booking_ref=booking_ref,
        resource=resource,
        starts_at=starts_at,
        reason=reason,
        idempotency_key=idempotency_key,
    )


def enqueue_booking_expired(
    to: str,
    name: str,
    booking_ref: str,
    resource: str,
    starts_at: str,
    idempotency_key: str | None = None,
) -> AsyncResult[Any]:
    """Queue the notice that an unpaid pending booking expired."""
    return enqueue(
        contracts.SEND_BOOKING_EXPIRED,
        contracts.BookingExpiredArgs,
        to=to,
        name=name,
        booking_ref=booking_ref,
        resource=resource,
        starts_at=starts_at,
        idempotency_key=idempotency_key,
    )


def enqueue_password_reset(
    to: str, name: str, reset_url: str, expires_minutes: int, idempotency_key: str | None = None
) -> AsyncResult[Any]:
    """Queue a password reset email."""
    return enqueue(
        contracts.SEND_PASSWORD_RESET,
        contracts.PasswordResetArgs,
        to=to,
        name=name,
        reset_url=reset_url,
        expires_minutes=expires_minutes,
        idempotency_key=idempotency_key,
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
