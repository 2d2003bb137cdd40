"""Periodic maintenance tasks (queue ``maintenance``, prefork, one process), each run once per slot."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Task
from kombu.utils.json import dumps
from sqlalchemy.exc import OperationalError

from app import contracts
from app.booking import bookings, reminders
from app.celery_app import celery_app
from app.maintenance import runs, service
from app.maintenance.dead_letters import report_dead_letters as inspect_dead_letters
from app.settings import get_settings
from app.tasks import resources
from app.tasks.base import FleetTask
from app.tasks.notify import EmailNotifier
from routing import names

#: Booking emails (expiry notices, reminders) are published by name to the ``email`` queue.
notifier = EmailNotifier()


def periodic_task(
    name: str, retry_on: tuple[type[Exception], ...] = (OperationalError,)
) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
    """Register a periodic task: ``PeriodicArgs`` validated, retried on ``retry_on`` errors only."""
    return celery_app.task(
        bind=True, base=FleetTask, name=name, arguments=contracts.PeriodicArgs, autoretry_for=retry_on
    )


def run_once(task: FleetTask, job: str | None, slot: datetime | None, body: Callable[[], Any]) -> Any:
    """Run ``body`` once for (job, slot), recording the run; run it plainly without a slot.

    A second message of a slot that ran, or runs now, returns without calling ``body``.
    """
    if job is None or slot is None:
        return body()
    engine, task_id = resources.engine(), str(task.request.id)
    with runs.running(engine, job, slot, task_id) as turn:
        if turn != "run":
            return f"Already {turn} {job} for slot {slot.isoformat()}"
        try:
            result = body()
        except Exception as exc:
            runs.finish_run(engine, job, slot, task_id, ok=False, detail=dumps({"error": type(exc).__name__}))
            raise
        runs.finish_run(engine, job, slot, task_id, ok=True, detail=dumps({"result": result}))
        return result


@periodic_task(contracts.CLEANUP_OLD_SESSIONS)
def cleanup_old_sessions(self: FleetTask, job: str | None = None, slot: datetime | None = None) -> str:
    """Delete sessions older than seven days."""

    def cleanup() -> str:
        return f"Cleaned up {service.cleanup_old_sessions(resources.engine())} expired sessions"

    result: str = run_once(self, job, slot, cleanup)
    return result


@periodic_task(contracts.EXPIRE_RESULTS)
def expire_results(self: FleetTask, job: str | None = None, slot: datetime | None = None) -> str:
    """Delete result rows older than ``RESULT_EXPIRES`` or their task's own ``result_expires``."""
    backend: Any = self.app.backend  # the PostgreSQL backend's cleanup counts what it deleted
    result: str = run_once(self, job, slot, lambda: f"Expired {backend.cleanup()} results")
    return result


@periodic_task(contracts.REPORT_DEAD_LETTERS, retry_on=())
def report_dead_letters(self: FleetTask, job: str | None = None, slot: datetime | None = None) -> Any:
    """Count each dead-letter queue's messages and age its oldest one (a list of rows)."""

    def report() -> list[dict[str, Any]]:
        with self.app.connection_for_read() as connection:
            queues = inspect_dead_letters(connection, [names.dlq(queue) for queue in names.WORK_QUEUES])
        return [queue.as_dict() for queue in queues]

    return run_once(self, job, slot, report)


@periodic_task(contracts.EXPIRE_PENDING_BOOKINGS)
def expire_pending_bookings(self: FleetTask, job: str | None = None, slot: datetime | None = None) -> str:
    """Expire pending bookings left unpaid longer than ``BOOKING_HOLD_MINUTES``, each with a notice."""
    hold = timedelta(minutes=get_settings().booking_hold_minutes)

    def expire() -> str:
        count = bookings.expire_pending_bookings(resources.engine(), hold, notifier)
        return f"Expired {count} pending bookings"

    result: str = run_once(self, job, slot, expire)
    return result


@periodic_task(contracts.SEND_TOMORROWS_REMINDERS)
def send_tomorrows_reminders(self: FleetTask, job: str | None = None, slot: datetime | None = None) -> str:
    """Queue one reminder email per confirmed booking of the UTC day after the slot (or after now)."""
    day = ((slot or datetime.now(UTC)).astimezone(UTC) + timedelta(days=1)).date()

    def remind() -> str:
        count = reminders.queue_reminders(resources.engine(), notifier, day)
        return f"Queued {count} booking reminders for {day.isoformat()}"

    result: str = run_once(self, job, slot, remind)
    return result
