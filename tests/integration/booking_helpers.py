"""Booking test data and readers: seed users and slots, read the email tasks the booking tasks published."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kombu import Connection
from sqlalchemy import text

from app.booking.notices import Kind, Notice

#: Day the seeded slots fall on (UTC), far enough ahead to be bookable.
DAY = datetime(2031, 3, 14, tzinfo=UTC)


#: A staff upload: lines 2, 3 and 7 are good; 4-6, 8 and 9 are bad, each for its own reason.
IMPORT_CSV = """reference,email,name,resource,starts_at,amount_cents,currency
IMP-1,bo@example.com,Bo,Room A,2031-03-14T09:00:00+00:00,1500,EUR
IMP-2,bo@example.com,Bo,Room A,2031-03-14T10:00:00Z,0,EUR
IMP-3,not-an-email,Cy,Room A,2031-03-14T11:00:00+00:00,100,EUR
IMP-4,di@example.com,Di,Room Z,2031-03-14T11:00:00+00:00,100,EUR
IMP-5,di@example.com,Di,Room A,2031-03-14T09:00:00+00:00,-3,eur
IMP-6,di@example.com,Di,Room A,2031-03-14T11:00:00+00:00,100,EUR
IMP-1,ed@example.com,Ed,Room A,2031-03-14T11:00:00+00:00,100,EUR
IMP-7,ed@example.com,Ed,Room A,2031-03-14 11:00:00,100,EUR
"""


@dataclass(frozen=True)
class Seeded:
    """Ids of the seeded rows."""

    user_id: int
    resource_id: int
    slot_ids: list[int]


def seed(database: Any, slots: int = 3, resource: str = "Room A", email: str = "ada@example.com") -> Seeded:
    """Insert one user, one resource and ``slots`` one-hour slots from 09:00 UTC on ``DAY``."""
    with database.begin() as db:
        user_id = db.execute(
            text(
                "INSERT INTO users (email, name) VALUES (:e, 'Ada Lovelace') "
                "ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name RETURNING id"
            ),
            {"e": email},
        ).scalar_one()
        resource_id = db.execute(
            text("INSERT INTO resources (name) VALUES (:n) RETURNING id"), {"n": resource}
        ).scalar_one()
        slot_ids = [
            db.execute(
                text(
                    "INSERT INTO time_slots (resource_id, starts_at, ends_at) "
                    "VALUES (:r, :s, :e) RETURNING id"
                ),
                {"r": resource_id, "s": start, "e": start + timedelta(hours=1)},
            ).scalar_one()
            for start in (DAY + timedelta(hours=9 + i) for i in range(slots))
        ]
    return Seeded(int(user_id), int(resource_id), [int(s) for s in slot_ids])


def move_slot(database: Any, slot_id: int, days: int) -> None:
    """Move a slot ``days`` days later."""
    with database.begin() as db:
        db.execute(
            text(
                "UPDATE time_slots SET starts_at = starts_at + make_interval(days => :d), "
                "ends_at = ends_at + make_interval(days => :d) WHERE id = :s"
            ),
            {"s": slot_id, "d": days},
        )


def insert_booking(
    database: Any, ref: str, user_id: int, slot_id: int, status: str, age: str, payment: str | None = None
) -> int:
    """Insert a booking in ``status`` created ``age`` ago (an SQL interval), with a payment in ``payment``."""
    with database.begin() as db:
        booking_id: int = db.execute(
            text(
                "INSERT INTO bookings (reference, user_id, slot_id, status, confirmed_at, created_at) "
                "VALUES (:r, :u, :s, :st, CASE WHEN :st = 'confirmed' THEN now() END, "
                "now() - CAST(:age AS interval)) RETURNING id"
            ),
            {"r": ref, "u": user_id, "s": slot_id, "st": status, "age": age},
        ).scalar_one()
        if payment is not None:
            db.execute(
                text(
                    "INSERT INTO payments (booking_id, amount_cents, idempotency_key, status) "
                    "VALUES (:b, 2500, :k, :st)"
                ),
                {"b": booking_id, "k": f"booking:{ref}", "st": payment},
            )
    return booking_id


def booking_statuses(database: Any) -> dict[str, str]:
    """Every booking's status, by reference."""
    return {r.reference: r.status for r in rows(database, "SELECT reference, status FROM bookings")}


def rows(database: Any, sql: str, **params: Any) -> list[Any]:
    """Run a query, return all rows."""
    with database.connect() as db:
        return list(db.execute(text(sql), params))


def scalar(database: Any, sql: str, **params: Any) -> Any:
    """Run a query, return its one value."""
    with database.connect() as db:
        return db.execute(text(sql), params).scalar()


@dataclass(frozen=True)
class Published:
    """A task message read from a queue."""

    task: str
    kwargs: dict[str, Any]
    group: str | None


def take_messages(broker: Connection, queue: str) -> list[Published]:
    """Consume (and ack) every ready message of ``queue``, in queue order."""
    taken = []
    with broker.channel() as channel:
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            _args, kwargs, _embed = json.loads(message.body)
            taken.append(Published(message.headers["task"], kwargs, message.headers.get("group")))
    return taken


class RecordingNotifier:
    """A ``Notifier`` that keeps what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[Kind, Notice]] = []

    def send(self, kind: Kind, notices: list[Notice]) -> None:
        self.sent.extend((kind, notice) for notice in notices)

    def kinds(self) -> list[Kind]:
        return [kind for kind, _ in self.sent]
