"""Email tasks (queue ``email``, gevent pool): validate, call the mail service once, return.

Each email is sent at most once per idempotency key: the key defaults to the
task id (the same across retries and redeliveries); producers pass their own
(``booking-confirmation:<booking id>``) to de-duplicate separate publishes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

from app import contracts
from app.celery_app import celery_app
from app.mail import emails
from app.mail.emails import Booking
from app.mail.service import DeliveryBusy
from app.mail.smtp import SmtpTransientError
from app.settings import get_settings
from app.tasks import resources
from app.tasks.base import FleetTask

F = TypeVar("F", bound=Callable[..., str])

#: Failures a later attempt may get past, retried with backoff; anything else
#: fails at once (SMTP 5xx, an invalid address or header) and is dead-lettered
#: to ``email.dlq``. ``DeliveryBusy`` is retried too, when the lease runs out.
RETRY_ON = (SmtpTransientError,)
#: Seconds between looks at a key another attempt is sending.
BUSY_RECHECK = 5.0


def email_task(name: str, arguments: type[contracts.Arguments]) -> Callable[[F], Any]:
    """Register an email task with the fleet's retry policy for email."""

    def register(body: F) -> Any:
        @functools.wraps(body)
        def run(self: FleetTask, *args: Any, **kwargs: Any) -> str:
            try:
                return body(self, *args, **kwargs)
            except DeliveryBusy as busy:
                # Another attempt holds the key: look again soon (it is usually
                # about to finish), for as long as its lease lasts (its process
                # may have died; then the key is taken over when the lease ends).
                more = math.ceil(busy.retry_in / BUSY_RECHECK) + 1
                countdown = min(busy.retry_in, BUSY_RECHECK)
                raise self.retry(
                    exc=busy, countdown=countdown, max_retries=self.request.retries + more
                ) from None

        return celery_app.task(
            bind=True,
            base=FleetTask,
            name=name,
            arguments=arguments,
            autoretry_for=RETRY_ON,
            max_retries=get_settings().email_max_retries,
        )(run)

    return register


def keys(task: FleetTask, idempotency_key: str | None) -> dict[str, Any]:
    """The idempotency key (the producer's, else the task id) and the task id."""
    task_id = task.request.id or ""
    return {"key": idempotency_key or task_id, "task_id": task_id}


@email_task(contracts.SEND_WELCOME_EMAIL, contracts.WelcomeEmailArgs)
def send_welcome_email(
    self: FleetTask, user_email: str, user_name: str, idempotency_key: str | None = None
) -> str:
    """Send the welcome email to a new user."""
    return resources.mail_service().send_welcome(user_email, user_name, **keys(self, idempotency_key))


@email_task(contracts.SEND_BOOKING_CONFIRMATION, contracts.BookingConfirmationArgs)
def send_booking_confirmation(
    self: FleetTask,
    to: str,
    name: str,
    booking_ref: str,
    resource: str,
    starts_at: str,
    ends_at: str,
    idempotency_key: str | None = None,
) -> str:
    """Confirm a booking, with a calendar invitation (``.ics``, METHOD:REQUEST)."""
    booking = Booking(booking_ref, resource, starts_at, ends_at)
    return resources.mail_service().send_booking_confirmation(
        to, name, booking, **keys(self, idempotency_key)
    )


@email_task(contracts.SEND_BOOKING_REMINDER, contracts.BookingReminderArgs)
def send_booking_reminder(
    self: FleetTask,
    to: str,
    name: str,
    booking_ref: str,
    resource: str,
    starts_at: str,
    ends_at: str,
    idempotency_key: str | None = None,
) -> str:
    """Remind the user of an upcoming booking."""
    booking = Booking(booking_ref, resource, starts_at, ends_at)
    return resources.mail_service().send(
        emails.booking_reminder(to, name, booking, **keys(self, idempotency_key))
    )


@email_task(contracts.SEND_BOOKING_CANCELLATION, contracts.BookingCancellationArgs)
def send_booking_cancellation(
    self: FleetTask,
    to: str,
    name: str,
    booking_ref: str,
    resource: str,
    starts_at: str,
    reason: str | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Tell the user a booking was cancelled (with the reason, when given)."""
    booking = Booking(booking_ref, resource, starts_at)
    return resources.mail_service().send(
        emails.booking_cancellation(to, name, booking, reason, **keys(self, idempotency_key))
    )


@email_task(contracts.SEND_BOOKING_EXPIRED, contracts.BookingExpiredArgs)
def send_booking_expired(
    self: FleetTask,
    to: str,
    name: str,
    booking_ref: str,
    resource: str,
    starts_at: str,
    idempotency_key: str | None = None,
) -> str:
    """Tell the user an unpaid pending booking expired."""
    booking = Booking(booking_ref, resource, starts_at)
    return resources.mail_service().send(
        emails.booking_expired(to, name, booking, **keys(self, idempotency_key))
    )


@email_task(contracts.SEND_PASSWORD_RESET, contracts.PasswordResetArgs)
def send_password_reset(
    self: FleetTask,
    to: str,
    name: str,
    reset_url: str,
    expires_minutes: int,
    idempotency_key: str | None = None,
) -> str:
    """Send a password reset link."""
    return resources.mail_service().send(
        emails.password_reset(to, name, reset_url, expires_minutes, **keys(self, idempotency_key))
    )
