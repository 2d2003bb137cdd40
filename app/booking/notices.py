"""What a booking email says, and the protocol through which the domain asks for one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Any, Literal, Protocol

from sqlalchemy import Column, ColumnElement, Connection, Select, func, select, update

from app.schema import bookings, resources, time_slots, users

#: The booking emails; each kind maps to one email task.
Kind = Literal["confirmation", "reminder", "cancellation", "expired"]


@dataclass(frozen=True)
class Notice:
    """The facts a booking email needs (the email task's arguments, less the key)."""

    booking_id: int
    to: str
    name: str
    booking_ref: str
    resource: str
    starts_at: str
    ends_at: str
    reason: str | None = None

    def idempotency_key(self, kind: Kind) -> str:
        """The key the email worker deduplicates by: one email of a kind per booking."""
        return f"booking-{kind}:{self.booking_id}"


class Notifier(Protocol):
    """Queues booking emails; each call returns once the broker has them."""

    def send(self, kind: Kind, notices: list[Notice]) -> None:
        """Queue one email of ``kind`` per notice, keyed by ``Notice.idempotency_key``."""


def notice_query() -> Select[Any]:
    """Select the columns a ``Notice`` is built from, bookings joined to user, slot and resource."""
    return (
        select(
            bookings.c.id,
            bookings.c.reference,
            bookings.c.status_reason,
            users.c.email,
            users.c.name,
            resources.c.name.label("resource"),
            time_slots.c.starts_at,
            time_slots.c.ends_at,
        )
        .join(users, users.c.id == bookings.c.user_id)
        .join(time_slots, time_slots.c.id == bookings.c.slot_id)
        .join(resources, resources.c.id == time_slots.c.resource_id)
    )


def notice_from_row(row: Any) -> Notice:
    """Build a ``Notice`` from a row of ``notice_query``."""
    return Notice(
        booking_id=row.id,
        to=row.email,
        name=row.name,
        booking_ref=row.reference,
        resource=row.resource,
        starts_at=row.starts_at.astimezone(UTC).isoformat(),
        ends_at=row.ends_at.astimezone(UTC).isoformat(),
        reason=row.status_reason,
    )


def load_notice(connection: Connection, booking_id: int) -> Notice:
    """Read the notice of one booking."""
    return notice_from_row(connection.execute(notice_query().where(bookings.c.id == booking_id)).one())


def queue_once(
    db: Connection, notifier: Notifier, kind: Kind, queued: Column[Any], *where: ColumnElement[bool]
) -> int:
    """Queue a ``kind`` email for each booking matching ``where`` not yet marked ``queued``; mark them.

    The rows stay locked from the select to the caller's commit, so a
    concurrent duplicate run skips them and a later one finds them marked.

    Returns:
        How many emails this call queued.
    """
    query = (
        notice_query()
        .where(queued.is_(None), *where)
        .order_by(time_slots.c.starts_at, bookings.c.id)
        .with_for_update(of=bookings, skip_locked=True)
    )
    notices = [notice_from_row(row) for row in db.execute(query)]
    if notices:
        notifier.send(kind, notices)
        db.execute(
            update(bookings)
            .where(bookings.c.id.in_([notice.booking_id for notice in notices]))
            .values({queued.name: func.now()})
        )
    return len(notices)
