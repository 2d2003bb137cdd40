"""Reminder emails for a day's bookings: which bookings need one, and queueing them once."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import ColumnElement, Engine

from app.booking.notices import Notice, Notifier, notice_from_row, notice_query, queue_once
from app.schema import bookings, time_slots


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _due(day: date) -> list[ColumnElement[bool]]:
    start, end = _day_bounds(day)
    return [bookings.c.status == "confirmed", time_slots.c.starts_at >= start, time_slots.c.starts_at < end]


def bookings_needing_reminders(engine: Engine, day: date) -> list[Notice]:
    """Confirmed bookings starting on ``day`` (UTC) whose reminder has not been queued."""
    query = notice_query().where(bookings.c.reminder_queued_at.is_(None), *_due(day))
    with engine.connect() as db:
        rows = db.execute(query.order_by(time_slots.c.starts_at, bookings.c.id))
        return [notice_from_row(row) for row in rows]


def queue_reminders(engine: Engine, notifier: Notifier, day: date) -> int:
    """Queue one reminder per confirmed booking starting on ``day`` (UTC), once per booking.

    Concurrent runs split the bookings between them (``queue_once``).

    Returns:
        How many reminders this call queued.
    """
    with engine.begin() as db:
        return queue_once(db, notifier, "reminder", bookings.c.reminder_queued_at, *_due(day))
