"""Booking and payment tasks (queue ``booking``, prefork pool).

Each task validates its arguments, calls one domain function and returns;
follow-up work (emails, import chunks) is published by task name.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from celery import Task
from sqlalchemy.exc import OperationalError

from app import contracts
from app.booking import bookings, imports, reminders, service, sync
from app.booking.provider import PaymentProviderUnavailable
from app.booking.repository import SqlPaymentRepository
from app.celery_app import celery_app
from app.settings import get_settings
from app.tasks import resources
from app.tasks.base import FleetTask
from app.tasks.notify import EmailNotifier, publish

#: Errors that may pass: database connection loss, lock and statement timeouts,
#: deadlocks (all OperationalError), and a provider that is down or slow.
TRANSIENT = (OperationalError, PaymentProviderUnavailable)
notifier = EmailNotifier()


def booking_task(
    name: str, arguments: type[contracts.Arguments]
) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
    """Register a booking task: validated arguments, retried on ``TRANSIENT`` errors only."""
    return celery_app.task(bind=True, base=FleetTask, name=name, arguments=arguments, autoretry_for=TRANSIENT)


@booking_task(contracts.PROCESS_PAYMENT, contracts.ProcessPaymentArgs)
def process_payment(self: FleetTask, payment_id: int) -> str:
    """Charge a payment once; a second run returns "Already processed"."""
    repository = SqlPaymentRepository(resources.engine(), resources.payment_provider())
    return service.process_payment(repository, payment_id)


@booking_task(contracts.PROCESS_BOOKING, contracts.ProcessBookingArgs)
def process_booking(
    self: FleetTask, reference: str, user_id: int, slot_id: int, amount_cents: int, currency: str = "EUR"
) -> str:
    """Validate, reserve, charge and confirm a booking, then chain its confirmation email."""
    request = bookings.BookingRequest(reference, user_id, slot_id, amount_cents, currency)
    return bookings.place_booking(resources.engine(), resources.payment_provider(), notifier, request)


@booking_task(contracts.CANCEL_BOOKING, contracts.CancelBookingArgs)
def cancel_booking(self: FleetTask, booking_id: int, reason: str | None = None) -> str:
    """Cancel a booking, refund it when it was paid, and queue the cancellation email."""
    return bookings.cancel_booking(
        resources.engine(), resources.payment_provider(), notifier, booking_id, reason
    )


@booking_task(contracts.SEND_BOOKING_REMINDERS, contracts.BookingRemindersArgs)
def send_booking_reminders(self: FleetTask, day: date) -> str:
    """Fan out one reminder email (a group) per confirmed booking starting on ``day``."""
    count = reminders.queue_reminders(resources.engine(), notifier, day)
    return f"Queued {count} booking reminders for {day.isoformat()}"


@booking_task(contracts.IMPORT_BOOKINGS, contracts.ImportArgs)
def import_bookings(self: FleetTask, import_id: int) -> str:
    """Validate an uploaded CSV, then fan out its chunks (or close it when none is left)."""
    chunks = imports.start_import(resources.engine(), import_id, get_settings().booking_import_chunk_size)
    if chunks:
        publish(contracts.IMPORT_BOOKING_CHUNK, [{"import_id": import_id, "chunk": c} for c in chunks])
    else:
        publish(contracts.FINISH_BOOKING_IMPORT, [{"import_id": import_id}])
    return f"Import {import_id}: {len(chunks)} chunks queued"


@booking_task(contracts.IMPORT_BOOKING_CHUNK, contracts.ImportChunkArgs)
def import_booking_chunk(self: FleetTask, import_id: int, chunk: int) -> str:
    """Book one chunk of an import; the last chunk to finish queues the summary task."""
    if imports.import_chunk(resources.engine(), import_id, chunk):
        publish(contracts.FINISH_BOOKING_IMPORT, [{"import_id": import_id}])
    return f"Import {import_id} chunk {chunk} done"


@booking_task(contracts.FINISH_BOOKING_IMPORT, contracts.ImportArgs)
def finish_booking_import(self: FleetTask, import_id: int) -> str:
    """Close an import with its totals (imported rows, rejected rows)."""
    return imports.finish_import(resources.engine(), import_id)


@booking_task(contracts.EXPORT_BOOKING_CALENDARS, contracts.NoArgs)
def export_booking_calendars(self: FleetTask) -> str:
    """Write each resource's confirmed bookings as an iCalendar feed (``CALENDAR_EXPORT_DIR``)."""
    count = sync.export_calendars(resources.engine(), Path(get_settings().calendar_export_dir))
    return f"Exported {count} calendars"


@booking_task(contracts.RECONCILE_PAYMENTS, contracts.ReconcileArgs)
def reconcile_payments(self: FleetTask, statement_path: str) -> dict[str, Any]:
    """Compare a provider statement file with the payments; stamp the ones that agree."""
    return sync.reconcile_payments(resources.engine(), Path(statement_path)).summary()
