"""Booking and payment tasks (queue ``booking``, prefork pool).

Each task validates its arguments, calls one domain function and returns;
follow-up emails are published by task name. The import and the calendar
export are canvases: their first task replaces itself with the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from celery import Task, chord
from sqlalchemy.exc import OperationalError

from app import contracts
from app.booking import bookings, imports, reminders, service, sync
from app.booking.provider import PaymentProviderUnavailable
from app.booking.repository import SqlPaymentRepository
from app.celery_app import celery_app
from app.settings import get_settings
from app.tasks import resources
from app.tasks.base import FleetTask, check_options
from app.tasks.notify import EmailNotifier

#: Errors that may pass: database connection loss, lock and statement timeouts,
#: deadlocks (all OperationalError), and a provider that is down or slow.
TRANSIENT = (OperationalError, PaymentProviderUnavailable)
#: Calendar exports a worker starts at most (Celery's per-worker token bucket):
#: a full export reads every confirmed booking, so a burst of requests is spread
#: out instead of hitting the database at once. A waiting export holds one of
#: its worker's prefetch slots, so the export is routed to the maintenance queue
#: (``routing.routes.OVERRIDES``), where waiting delays only housekeeping.
EXPORT_RATE_LIMIT = "10/m"
notifier = EmailNotifier()


def booking_task(
    name: str, arguments: type[contracts.Arguments], *, rate_limit: str | None = None
) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
    """Register a booking task: validated arguments, retried on ``TRANSIENT`` errors only.

    Args:
        name: The task name (a ``contracts`` constant).
        arguments: The task's argument model.
        rate_limit: Celery's ``rate_limit`` (``"10/m"``: per worker, per task type),
            checked here so a bad value fails at import, naming the task.
    """
    check_options(name, rate_limit=rate_limit)
    return celery_app.task(
        bind=True,
        base=FleetTask,
        name=name,
        arguments=arguments,
        autoretry_for=TRANSIENT,
        rate_limit=rate_limit,
    )


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
def import_bookings(self: FleetTask, import_id: int) -> Any:
    """Validate an uploaded CSV, then hand over to the rest of the import's chain (same task id).

    The chain is the seed's validate -> process -> notify: this task validates;
    a chord books the chunks (``import_booking_chunk``) and its body
    (``finish_booking_import``) closes the import with its report;
    ``notify_booking_import`` takes that report and queues the confirmations.
    The producer's result is the chain's last.
    """
    chunks = imports.start_import(resources.engine(), import_id, get_settings().booking_import_chunk_size)
    report = finish_booking_import.si(import_id)
    process = chord([import_booking_chunk.si(import_id, c) for c in chunks], report) if chunks else report
    return self.replace(process | notify_booking_import.s())


@booking_task(contracts.IMPORT_BOOKING_CHUNK, contracts.ImportChunkArgs)
def import_booking_chunk(self: FleetTask, import_id: int, chunk: int) -> int:
    """Book one chunk of an import; return how many of its rows were booked.

    The import's own result (the producer's task id, the chain's root) shows
    its progress: PROGRESS with the chunks booked so far, ``{"done", "total"}``.
    """
    imported = imports.import_chunk(resources.engine(), import_id, chunk)
    self.report_progress(
        *imports.import_progress(resources.engine(), import_id), task_id=self.request.root_id
    )
    return imported


@booking_task(contracts.FINISH_BOOKING_IMPORT, contracts.ImportArgs)
def finish_booking_import(self: FleetTask, import_id: int) -> imports.ImportReport:
    """Close an import with its totals (imported rows, rejected rows); return its report."""
    return imports.finish_import(resources.engine(), import_id)


@booking_task(contracts.NOTIFY_BOOKING_IMPORT, contracts.NotifyImportArgs)
def notify_booking_import(self: FleetTask, report: contracts.ImportReport) -> str:
    """Queue the confirmation email of each booking an import made; say what the import did."""
    queued = imports.notify_imported(resources.engine(), notifier, report.import_id)
    return (
        f"Import {report.import_id} {report.status}: {report.imported} imported, "
        f"{report.rejected} rejected, {queued} confirmations queued"
    )


@booking_task(contracts.EXPORT_BOOKING_CALENDARS, contracts.NoArgs, rate_limit=EXPORT_RATE_LIMIT)
def export_booking_calendars(self: FleetTask) -> Any:
    """Export every resource's iCalendar feed (``CALENDAR_EXPORT_DIR``): a group, then a reconciling body.

    One ``export_resource_calendar`` per resource runs as a chord whose body,
    ``finish_calendar_export``, takes the feeds written and deletes those of
    resources that are gone; it replaces this task (same task id). Each worker
    starts at most ``EXPORT_RATE_LIMIT`` exports; later requests wait their turn.
    """
    feeds = [export_resource_calendar.si(rid) for rid in sync.resource_ids(resources.engine())]
    finish = finish_calendar_export.s()
    return self.replace(chord(feeds, finish) if feeds else finish.clone(([],)))


@booking_task(contracts.EXPORT_RESOURCE_CALENDAR, contracts.CalendarArgs)
def export_resource_calendar(self: FleetTask, resource_id: int) -> int | None:
    """Write one resource's feed; return its id, or None when the resource is gone."""
    written = sync.export_calendar(resources.engine(), _calendar_dir(), resource_id)
    return resource_id if written else None


@booking_task(contracts.FINISH_CALENDAR_EXPORT, contracts.FinishCalendarExportArgs)
def finish_calendar_export(self: FleetTask, exported: list[int | None]) -> str:
    """Delete the feeds of resources that no longer exist; say how many feeds the export wrote."""
    written = [rid for rid in exported if rid is not None]
    stale = sync.prune_calendars(_calendar_dir(), {*written, *sync.resource_ids(resources.engine())})
    return f"Exported {len(written)} calendars" + (f", removed {len(stale)}" if stale else "")


def _calendar_dir() -> Path:
    return Path(get_settings().calendar_export_dir)


@booking_task(contracts.RECONCILE_PAYMENTS, contracts.ReconcileArgs)
def reconcile_payments(self: FleetTask, statement_path: str) -> dict[str, Any]:
    """Compare a provider statement file with the payments; stamp the ones that agree."""
    return sync.reconcile_payments(resources.engine(), Path(statement_path)).summary()
