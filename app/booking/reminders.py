"""Reminder emails for a day's bookings: which bookings need one, and queueing them once."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Connection, Engine, func, update

from app.booking.notices import Notice, Notifier, notice_from_row, notice_query
from app.schema import bookings, time_slots


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _due(db: Connection, day: date, *, lock: bool) -> list[Notice]:
    start, end = _day_bounds(day)
    query = notice_query().where(
        bookings.c.status == "confirmed",
        bookings.c.reminder_queued_at.is_(None),
        time_slots.c.starts_at >= start,
        time_slots.c.starts_at < end,
    )
    if lock:
        # Another run holding some of these rows queues them; this one skips them.
        query = query.with_for_update(of=bookings, skip_locked=True)
    return [notice_from_row(row) for row in db.execute(query.order_by(time_slots.c.starts_at, bookings.c.id))]


def bookings_needing_reminders(engine: Engine, day: date) -> list[Notice]:
    """Confirmed bookings starting on ``day`` (UTC) whose reminder has not been queued."""
    with engine.connect() as db:
        return _due(db, day, lock=False)


def queue_reminders(engine: Engine, notifier: Notifier, day: date) -> int:
    """Queue one reminder per confirmed booking starting on ``day`` (UTC), once per booking.

    The rows stay locked from the select to the commit that marks them queued,
    so a concurrent duplicate run skips them and a sequential one finds them
    marked.

    Returns:
        How many reminders this call queued.
    """
    with engine.begin() as db:
        notices = _due(db, day, lock=True)
        if notices:
            notifier.send("reminder", notices)
            db.execute(
                update(bookings)
                .where(bookings.c.id.in_([n.booking_id for n in notices]))
                .values(reminder_queued_at=func.now())
            )
    return len(notices)
