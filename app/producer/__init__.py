"""Producer API: the only module the FastAPI service imports to enqueue work.

The fleet's one publish core. ``send`` publishes one message: by task name,
nothing declared, ``mandatory`` (a task no queue is bound for raises instead of
vanishing), publisher confirms, every wait bounded. ``publish`` validates with
the task's own model (``contracts.ARGUMENT_MODELS``) and then sends; every
``enqueue_*`` helper, the outbox relay, beat (through the outbox), the booking
tasks' follow-ups and ``magnetiq publish`` are thin callers of these two.
``enqueue_many`` (from ``app.publisher``) gives the same guarantees to many calls
of one task at once: one channel, streamed confirms, an error naming every task
the broker did not confirm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict, Unpack

from celery.result import AsyncResult
from kombu import Producer

from app import contracts
from app.cancellations import Cancellation, InvalidTaskId, cancel
from app.celery_app import celery_app
from app.publisher import PublishError, enqueue_many
from app.settings import get_settings
from routing.names import MAX_DELAY_SECONDS

__all__ = [
    "Cancellation",
    "Delay",
    "InvalidTaskId",
    "PublishError",
    "cancel",
    "delay_seconds",
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


class Delay(TypedDict, total=False):
    """When a task may start: ``countdown`` seconds from now, or at ``eta``; neither means now."""

    countdown: float | None
    eta: datetime | None


def delay_seconds(countdown: float | None = None, eta: datetime | None = None) -> int | None:
    """Return the whole seconds a task waits before it may start, or None for at once.

    Native delayed delivery counts in whole seconds and refuses a delay between 0
    and 1 s (kombu's ``calculate_routing_key``), so a fractional delay is rounded
    up: a task never starts before it was asked to. An ``eta`` that has passed
    means at once.

    Raises:
        ValueError: both are given, ``countdown`` is negative or not a finite number,
            ``eta`` is not a timezone-aware datetime, or the delay exceeds
            ``MAX_DELAY_SECONDS`` (2**28 - 1 s, about 8.5 years).
    """
    if countdown is not None and eta is not None:
        raise ValueError("give countdown or eta, not both")
    if eta is not None:
        if not isinstance(eta, datetime) or eta.utcoffset() is None:
            raise ValueError(f"eta must be a timezone-aware datetime, got {eta!r}")
        seconds = (eta - datetime.now(UTC)).total_seconds()
    elif countdown is not None:
        if (
            isinstance(countdown, bool)
            or not isinstance(countdown, int | float)
            or not math.isfinite(countdown)
        ):
            raise ValueError(f"countdown must be a number of seconds, got {countdown!r}")
        if countdown < 0:
            raise ValueError(f"countdown must not be negative, got {countdown!r}")
        seconds = countdown
    else:
        return None
    if seconds > MAX_DELAY_SECONDS:
        raise ValueError(f"a delay of {seconds:.0f}s exceeds native delayed delivery's {MAX_DELAY_SECONDS}s")
    check_horizon(seconds)
    return math.ceil(seconds) if seconds > 0 else None


def check_horizon(seconds: float) -> None:
    """On a Redis broker, refuse a delay beyond ``REDIS_ETA_HORIZON``.

    A worker holds a delayed task unacked until it runs; held longer than the
    broker's visibility timeout (which covers the horizon), Redis would hand it
    to a second worker and it would run twice.

    Raises:
        ValueError: the broker is Redis and ``seconds`` exceeds the horizon.
    """
    settings = get_settings()
    if settings.broker == "redis" and seconds > settings.redis_eta_horizon:
        raise ValueError(
            f"a delay of {seconds:.0f}s exceeds REDIS_ETA_HORIZON ({settings.redis_eta_horizon}s) "
            "on a Redis broker: it would be delivered twice; raise the horizon or schedule it later"
        )


def publish(
    task_name: str,
    model: type[contracts.Arguments] | None,
    arguments: Mapping[str, Any],
    *,
    task_id: str | None = None,
    timeout: float = PUBLISH_TIMEOUT,
    **delay: Unpack[Delay],
) -> AsyncResult[Any]:
    """Validate ``arguments`` and publish ``task_name``; return once the broker confirmed it.

    Args:
        task_name: the task's dotted name (a ``contracts`` constant).
        model: the model to validate with; None: the task's own (``contracts.ARGUMENT_MODELS``).
        arguments: the task's keyword arguments.
        task_id: the id to publish under; a caller that retries after an error
            passes the same id again, so the task runs once whatever the first try did.
        timeout: seconds each confirm wait and each connection attempt may take.
        **delay: ``countdown`` or ``eta``: when the task may start (see ``delay_seconds``).

    Raises:
        contracts.InvalidTaskArguments: the arguments can never be valid, or (no
            ``model``) the task is not one of the fleet's.
        ValueError: ``countdown`` or ``eta`` is not a valid delay; nothing was published.
        amqp.exceptions.ChannelError: no queue is bound for the task, or the broker refused it.
        kombu.exceptions.OperationalError: the broker could not be reached in time
            (the task may or may not be queued: publish again with the same ``task_id``).
        TimeoutError: the broker did not confirm in time (same advice).
    """
    validated = contracts.validate_arguments(
        task_name, model or contracts.model_for(task_name), dict(arguments)
    )
    # None is every optional argument's default: leave it out, so messages stay as before.
    kwargs = validated.model_dump(mode="json", exclude_none=True)
    return send(task_name, kwargs, task_id=task_id, timeout=timeout, **delay)


def send(
    task_name: str,
    kwargs: dict[str, Any],
    *,
    args: Sequence[Any] = (),
    task_id: str | None = None,
    timeout: float = PUBLISH_TIMEOUT,
    producer: Producer | None = None,
    headers: dict[str, Any] | None = None,
    expires: datetime | None = None,
    **delay: Unpack[Delay],
) -> AsyncResult[Any]:
    """Publish already validated JSON ``kwargs`` with publisher confirms, bounded as ``publish`` is.

    Nothing is declared: workers and ``magnetiq topology apply`` own the
    topology, so a producer needs write access to ``magnetiq.tasks`` alone (and to
    ``celery_delayed_27`` for a delayed task: native delayed delivery).
    ``args`` are positional arguments (the fleet's own tasks take none);
    ``producer`` publishes on a connection of the caller's (its pool by default);
    ``headers`` are added to the message's, and past ``expires`` a worker drops it unstarted.

    Raises:
        ValueError: ``countdown`` or ``eta`` is not a valid delay; nothing was published.
        amqp.exceptions.ChannelError: no queue is bound for the task (``NO_ROUTE``;
            run ``magnetiq topology apply``), or the broker refused the publish.
        kombu.exceptions.OperationalError: the broker could not be reached in time.
        TimeoutError: the broker did not confirm in time.
    """
    countdown = delay_seconds(**delay)
    return celery_app.send_task(
        task_name,
        args=args,
        kwargs=kwargs,
        task_id=task_id,
        countdown=countdown,
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


def enqueue(
    task_name: str,
    model: type[contracts.Arguments],
    *,
    countdown: float | None = None,
    eta: datetime | None = None,
    **arguments: Any,
) -> AsyncResult[Any]:
    """Validate ``arguments`` against ``model`` and publish ``task_name`` (delayed: ``countdown``/``eta``).

    Raises:
        contracts.InvalidTaskArguments: the arguments can never be valid.
        ValueError: ``countdown`` or ``eta`` is not a valid delay.
    """
    return publish(task_name, model, arguments, countdown=countdown, eta=eta)


def enqueue_welcome_email(
    user_email: str,
    user_name: str,
    idempotency_key: str | None = None,
    **delay: Unpack[Delay],
) -> AsyncResult[Any]:
    """Queue the welcome email for a new user (sent once per ``idempotency_key``, else per task)."""
    return enqueue(
        contracts.SEND_WELCOME_EMAIL,
        contracts.WelcomeEmailArgs,
        user_email=user_email,
        user_name=user_name,
        idempotency_key=idempotency_key,
        **delay,
    )


def enqueue_booking_confirmation(
    to: str,
    name: str,
    booking_ref: str,
    resource: str,
    starts_at: str,
    ends_at: str,
    idempotency_key: str | None = None,
    **delay: Unpack[Delay],
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
        **delay,
    )


def enqueue_booking_reminder(
    to: str,
    name: str,
    booking_ref: str,
    resource: str,
    starts_at: str,
    ends_at: str,
    idempotency_key: str | None = None,
    **delay: Unpack[Delay],
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
        **delay,
    )


def enqueue_booking_cancellation(
    to: str,
    name: str,
    booking_ref: str,
    resource: str,
    starts_at: str,
    reason: str | None = None,
    idempotency_key: str | None = None,
    **delay: Unpack[Delay],
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
        **delay,
    )


def enqueue_booking_expired(
    to: str,
    name: str,
    booking_ref: str,
    resource: str,
    starts_at: str,
    idempotency_key: str | None = None,
    **delay: Unpack[Delay],
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
        **delay,
    )


def enqueue_password_reset(
    to: str,
    name: str,
    reset_url: str,
    expires_minutes: int,
    idempotency_key: str | None = None,
    **delay: Unpack[Delay],
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
        **delay,
    )


def enqueue_process_payment(payment_id: int, **delay: Unpack[Delay]) -> AsyncResult[Any]:
    """Queue processing of a pending payment (idempotent)."""
    return enqueue(contracts.PROCESS_PAYMENT, contracts.ProcessPaymentArgs, payment_id=payment_id, **delay)


def enqueue_process_booking(
    reference: str,
    user_id: int,
    slot_id: int,
    amount_cents: int,
    currency: str = "EUR",
    **delay: Unpack[Delay],
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
        **delay,
    )


def enqueue_cancel_booking(
    booking_id: int, reason: str | None = None, **delay: Unpack[Delay]
) -> AsyncResult[Any]:
    """Queue a cancellation (refund when paid, cancellation email)."""
    return enqueue(
        contracts.CANCEL_BOOKING, contracts.CancelBookingArgs, booking_id=booking_id, reason=reason, **delay
    )


def enqueue_import_bookings(import_id: int, **delay: Unpack[Delay]) -> AsyncResult[Any]:
    """Queue the import of an uploaded CSV stored with ``app.booking.imports.create_import``."""
    return enqueue(contracts.IMPORT_BOOKINGS, contracts.ImportArgs, import_id=import_id, **delay)


def enqueue_cleanup_old_sessions(**delay: Unpack[Delay]) -> AsyncResult[Any]:
    """Queue a session cleanup now (beat also runs it daily)."""
    return enqueue(contracts.CLEANUP_OLD_SESSIONS, contracts.NoArgs, **delay)
