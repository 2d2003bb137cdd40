"""Email tasks (queue ``email``, gevent pool): validate, call the mail service once, return.

Each email is sent at most once per idempotency key: the key defaults to the
task id (the same across retries and redeliveries); producers pass their own
(``booking-confirmation:<booking id>``) to de-duplicate separate publishes.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from celery.exceptions import Retry
from celery.utils.time import get_exponential_backoff_interval

from app import contracts
from app.celery_app import celery_app
from app.mail import emails
from app.mail.emails import Booking
from app.mail.errors import DeliveryBusy, SmtpTransientError
from app.mail.ledger import SENT_UNMARKED_HEADER, SentMarkRefused
from app.settings import get_settings
from app.tasks import resources
from app.tasks.base import FleetTask, check_options

F = TypeVar("F", bound=Callable[..., str])
log = logging.getLogger(__name__)

#: Failures a later attempt may get past, retried with backoff up to
#: ``EMAIL_MAX_RETRIES`` times; anything else fails at once (SMTP 5xx, an
#: invalid address or header) and is dead-lettered to ``email.dlq``.
RETRY_ON = (SmtpTransientError,)
#: Seconds between looks at a key another attempt is sending.
BUSY_RECHECK = 5.0
#: Message header counting the busy waits of an email so far. A busy wait is a
#: retry too (``request.retries`` counts it), but it waits for someone else (another
#: attempt's lease: ``DeliveryBusy``; the database refusing the sent mark of an
#: email that went out: ``SentMarkRefused``) and must not spend the failure budget.
BUSY_WAITS_HEADER = "email_busy_waits"
#: Seconds a password reset's result row is kept, instead of ``RESULT_EXPIRES``:
#: the link it reports on is short-lived. (Not the link's validity, which is the
#: task's ``expires_minutes``, nor Celery's ``expires``, a message expiry.)
PASSWORD_RESET_RESULT_EXPIRES = 3600


def email_task(
    name: str, arguments: type[contracts.Arguments], *, result_expires: int | None = None
) -> Callable[[F], Any]:
    """Register an email task with the fleet's retry policy for email.

    Args:
        name: The task name (a ``contracts`` constant).
        arguments: The task's argument model.
        result_expires: Seconds its result rows are kept, instead of ``RESULT_EXPIRES``
            (``FleetTask.result_expires``), checked here so a bad value fails at import.
    """
    check_options(name, result_expires=result_expires)

    def register(body: F) -> Any:
        @functools.wraps(body)
        def run(self: FleetTask, *args: Any, **kwargs: Any) -> str:
            try:
                return body(self, *args, **kwargs)
            except DeliveryBusy as busy:
                # Another attempt holds the key: look again soon (it is usually
                # about to finish), for as long as its lease lasts (its process
                # may have died; then the key is taken over when the lease ends).
                raise busy_wait(self, busy, min(busy.retry_in, BUSY_RECHECK)) from None
            except SentMarkRefused as refused:
                # The email went out: the rerun only owes its mark (the header says so).
                raise busy_wait(self, refused, BUSY_RECHECK, {SENT_UNMARKED_HEADER: refused.key}) from None
            except RETRY_ON as exc:
                raise retry_after_failure(self, exc) from None

        # No ``autoretry_for``: Celery's autoretry would count busy waits as
        # failures (its limit and backoff read ``request.retries``).
        return celery_app.task(
            bind=True,
            base=FleetTask,
            name=name,
            arguments=arguments,
            max_retries=get_settings().email_max_retries,
            result_expires=result_expires,
        )(run)

    return register


def busy_waits(headers: Mapping[str, Any] | None, retries: int) -> int:
    """The busy waits among a request's ``retries`` (a missing or malformed header counts none)."""
    try:
        waits = int((headers or {}).get(BUSY_WAITS_HEADER, 0))
    except (TypeError, ValueError):
        return 0
    return max(0, min(waits, retries))


def busy_wait_limit(lease: float) -> int:
    """How many busy waits an email may make before it gives up (to ``email.dlq``).

    A key whose holder died is taken over when its lease ends, at most
    ``lease`` seconds after the first look; the limit allows two whole leases
    of looks every ``BUSY_RECHECK`` seconds, so only a key that other attempts
    keep taking over exhausts it.
    """
    return 2 * (math.ceil(lease / BUSY_RECHECK) + 1)


def busy_wait(
    task: FleetTask, exc: Exception, countdown: float, headers: Mapping[str, Any] | None = None
) -> Retry:
    """Retry after ``countdown`` seconds (with ``headers`` added), counted as a busy wait.

    Raises:
        Exception: ``exc`` itself once the email made ``busy_wait_limit`` busy waits.
    """
    request = task.request
    waits = busy_waits(request.headers, request.retries)
    if waits >= busy_wait_limit(resources.delivery_lease()):
        log.error("%s[%s]: gave up after %d busy waits", task.name, request.id, waits)
        raise exc
    # The request's headers as Celery's own retry passes them on (without
    # RabbitMQ's death headers, or the broker drops the copy as a dead-letter cycle).
    merged = {**request.as_execution_options()["headers"], **(headers or {}), BUSY_WAITS_HEADER: waits + 1}
    return task.retry(exc=exc, countdown=countdown, max_retries=request.retries + 1, headers=merged)


def retry_after_failure(task: FleetTask, exc: Exception) -> Retry:
    """Retry with backoff while failures (retries that were not busy waits) stay within ``max_retries``.

    Raises:
        Exception: ``exc`` itself once the failure budget is spent.
    """
    request = task.request
    waits = busy_waits(request.headers, request.retries)
    countdown = get_exponential_backoff_interval(
        factor=int(max(1.0, float(task.retry_backoff))),
        retries=request.retries - waits,
        maximum=task.retry_backoff_max,
        full_jitter=task.retry_jitter,
    )
    limit = None if task.max_retries is None else task.max_retries + waits
    return task.retry(exc=exc, countdown=countdown, max_retries=limit)


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


@email_task(
    contracts.SEND_PASSWORD_RESET, contracts.PasswordResetArgs, result_expires=PASSWORD_RESET_RESULT_EXPIRES
)
def send_password_reset(
    self: FleetTask,
    to: str,
    name: str,
    reset_url: str,
    expires_minutes: int,
    idempotency_key: str | None = None,
) -> str:
    """Send a password reset link; its result row expires after ``PASSWORD_RESET_RESULT_EXPIRES``."""
    return resources.mail_service().send(
        emails.password_reset(to, name, reset_url, expires_minutes, **keys(self, idempotency_key))
    )
