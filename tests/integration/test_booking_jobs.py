"""The booking jobs on beat's schedule: real maintenance, email and bulk email workers, an SMTP sink."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from email.message import Message
from typing import Any

import pytest

from app import producer
from app.celery_app import celery_app
from app.contracts import EXPIRE_PENDING_BOOKINGS, SEND_TOMORROWS_REMINDERS
from app.maintenance.schedule import SCHEDULE, find_job
from tests.integration.booking_helpers import (
    DAY,
    booking_statuses,
    insert_booking,
    move_slot,
    rows,
    scalar,
    seed,
)
from tests.support.smtp_server import SmtpSink
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess


@pytest.fixture(scope="module")
def maintenance_worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """One real maintenance worker, holding bookings for 30 minutes."""
    return start_worker("maintenance", BOOKING_HOLD_MINUTES="30")


@pytest.fixture(scope="module")
def email_worker(start_worker: Callable[..., WorkerProcess], smtp_sink: SmtpSink) -> WorkerProcess:
    """One real email worker sending to the module's SMTP sink."""
    return start_worker("email", SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_sink.port))


@pytest.fixture(scope="module")
def bulk_worker(start_worker: Callable[..., WorkerProcess], smtp_sink: SmtpSink) -> WorkerProcess:
    """One real bulk email worker (the reminders' lane) sending to the module's SMTP sink."""
    return start_worker("bulk", SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_sink.port))


def _sent(database: Any, pattern: str) -> dict[str, str]:
    """The email ledger's rows whose key matches ``pattern``: key -> status."""
    found = rows(
        database,
        "SELECT idempotency_key, status FROM email_deliveries WHERE idempotency_key LIKE :p",
        p=pattern,
    )
    return {row.idempotency_key: row.status for row in found}


def _refs(mails: list[Message]) -> list[str]:
    """The booking references the sink's mails name in their subjects."""
    return sorted(str(mail["Subject"]).rsplit("(", 1)[-1].rstrip(")") for mail in mails)


def test_the_schedule_runs_both_booking_jobs_on_the_maintenance_queue() -> None:
    expire = find_job(SCHEDULE, "expire-pending-bookings")
    remind = find_job(SCHEDULE, "send-tomorrows-reminders")
    assert (expire.task, expire.cron) == (EXPIRE_PENDING_BOOKINGS, "*/5 * * * *")
    assert (remind.task, remind.cron) == (SEND_TOMORROWS_REMINDERS, "0 18 * * *")


def test_expiry_expires_unpaid_bookings_and_mails_each_once_when_the_slot_comes_twice(
    email_worker: WorkerProcess, maintenance_worker: WorkerProcess, sink: SmtpSink, database: Any
) -> None:
    # given a pending unpaid booking past the 30-minute hold, a pending one that was charged,
    # a confirmed one and a pending unpaid one inside the hold
    seeded = seed(database, slots=4)
    user, slots = seeded.user_id, seeded.slot_ids
    unpaid = insert_booking(database, "BK-UNPAID", user, slots[0], "pending", "45 minutes", "pending")
    insert_booking(database, "BK-CHARGED", user, slots[1], "pending", "45 minutes", "processed")
    insert_booking(database, "BK-CONFIRMED", user, slots[2], "confirmed", "2 hours", "processed")
    insert_booking(database, "BK-FRESH", user, slots[3], "pending", "10 minutes", "pending")

    # when beat's message for one slot arrives twice
    slot = {"job": "expire-pending-bookings", "slot": "2026-11-24T10:05:00+00:00"}
    outcomes = [celery_app.send_task(EXPIRE_PENDING_BOOKINGS, kwargs=slot) for _ in range(2)]

    # then one message ran the job and the other did nothing
    assert sorted(result.get(timeout=60) for result in outcomes) == [
        "Already ran expire-pending-bookings for slot 2026-11-24T10:05:00+00:00",
        "Expired 1 pending bookings",
    ]
    assert booking_statuses(database) == {
        "BK-UNPAID": "expired",
        "BK-CHARGED": "pending",
        "BK-CONFIRMED": "confirmed",
        "BK-FRESH": "pending",
    }
    assert scalar(database, "SELECT status FROM payments WHERE booking_id = :b", b=unpaid) == "failed"

    # and the expired booking's notice reached the SMTP server
    [mail] = sink.wait_for(1, timeout=60)
    assert mail["To"] == "ada@example.com"
    assert "BK-UNPAID" in str(mail["Subject"])
    key = f"booking-expired:{unpaid}"
    wait_until(lambda: _sent(database, "booking-expired:%") == {key: "sent"}, 30, "the notice recorded sent")

    # when the next slot runs and the notice is published once more under its key (a crash's replay)
    later = {"job": "expire-pending-bookings", "slot": "2026-11-24T10:10:00+00:00"}
    assert celery_app.send_task(EXPIRE_PENDING_BOOKINGS, kwargs=later).get(timeout=60) == (
        "Expired 0 pending bookings"
    )
    replay = producer.enqueue_booking_expired(
        "ada@example.com",
        "Ada Lovelace",
        "BK-UNPAID",
        "Room A",
        DAY.replace(hour=9).isoformat(),
        idempotency_key=key,
    )

    # then nothing more was sent: one email, one ledger row
    assert replay.get(timeout=60).startswith("Booking expiry notice already sent <")
    assert len(sink.messages) == 1
    assert _sent(database, "booking-expired:%") == {key: "sent"}


def test_tomorrows_reminders_mail_each_confirmed_booking_of_the_next_day_once(
    bulk_worker: WorkerProcess, maintenance_worker: WorkerProcess, sink: SmtpSink, database: Any
) -> None:
    # given two confirmed bookings and a cancelled one on DAY, and a confirmed one the day after
    seeded = seed(database, slots=3)
    later = seed(database, slots=1, resource="Room B")
    move_slot(database, later.slot_ids[0], days=1)
    first = insert_booking(database, "BK-R1", seeded.user_id, seeded.slot_ids[0], "confirmed", "1 day")
    second = insert_booking(database, "BK-R2", seeded.user_id, seeded.slot_ids[1], "confirmed", "1 day")
    insert_booking(database, "BK-CANCELLED", seeded.user_id, seeded.slot_ids[2], "cancelled", "1 day")
    insert_booking(database, "BK-NEXT-DAY", seeded.user_id, later.slot_ids[0], "confirmed", "1 day")

    # when beat's message for the evening before DAY arrives twice
    eve = (DAY - timedelta(days=1)).replace(hour=18).isoformat()
    slot = {"job": "send-tomorrows-reminders", "slot": eve}
    outcomes = [celery_app.send_task(SEND_TOMORROWS_REMINDERS, kwargs=slot) for _ in range(2)]

    # then one message queued DAY's two reminders and the other did nothing
    assert sorted(result.get(timeout=60) for result in outcomes) == [
        f"Already ran send-tomorrows-reminders for slot {eve}",
        f"Queued 2 booking reminders for {DAY.date().isoformat()}",
    ]

    # and exactly those two reminders reached the SMTP server, one per booking
    mails = sink.wait_for(2, timeout=60)
    assert _refs(mails) == ["BK-R1", "BK-R2"]
    keys = {f"booking-reminder:{first}": "sent", f"booking-reminder:{second}": "sent"}
    wait_until(lambda: _sent(database, "booking-reminder:%") == keys, 30, "both reminders recorded sent")

    # when the job runs again for the same day (a run by hand at another moment)
    again = {"job": "send-tomorrows-reminders", "slot": (DAY - timedelta(hours=5)).isoformat()}
    assert celery_app.send_task(SEND_TOMORROWS_REMINDERS, kwargs=again).get(timeout=60) == (
        f"Queued 0 booking reminders for {DAY.date().isoformat()}"
    )

    # then no booking is reminded twice, and the next day's booking waits for its own evening
    assert len(sink.messages) == 2
    assert _sent(database, "booking-reminder:%") == keys
    queued = rows(database, "SELECT reference FROM bookings WHERE reminder_queued_at IS NOT NULL ORDER BY 1")
    assert [row.reference for row in queued] == ["BK-R1", "BK-R2"]
