"""Booking flows on two real prefork booking workers, PostgreSQL, RabbitMQ and an HTTP payment provider.

The email tasks run elsewhere: the tests read the messages the booking tasks
chained onto the ``email`` queue.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import states
from icalendar import Calendar
from kombu import Connection
from sqlalchemy import text

from app import contracts, producer
from app.booking import bookings as booking_service
from app.booking.bookings import BookingNotFound, BookingRequest, UnknownReference
from app.booking.imports import create_import, import_errors
from app.booking.provider import HttpPaymentProvider
from app.celery_app import celery_app
from app.contracts import InvalidTaskArguments
from app.tasks.booking_tasks import (
    cancel_booking,
    export_booking_calendars,
    reconcile_payments,
    send_booking_reminders,
)
from routing import names
from tests.integration.booking_helpers import (
    DAY,
    IMPORT_CSV,
    Published,
    RecordingNotifier,
    Seeded,
    rows,
    scalar,
    seed,
    take_messages,
)
from tests.support.broker import queue_depth
from tests.support.payment_provider import Ledger
from tests.support.processes import descendants
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess

CONFIRMATION = "app.tasks.email_tasks.send_booking_confirmation"
CANCELLATION = "app.tasks.email_tasks.send_booking_cancellation"
REMINDER = "app.tasks.email_tasks.send_booking_reminder"


@pytest.fixture(scope="module")
def calendar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("calendars")


@pytest.fixture(scope="module")
def workers(start_worker: Callable[..., WorkerProcess], calendar_dir: Path) -> list[WorkerProcess]:
    """Two booking workers (two processes each) sharing the queue and the calendar directory.

    ``worker_env`` points them at the tests' payment provider.
    """
    env = {
        "CALENDAR_EXPORT_DIR": str(calendar_dir),
        "BOOKING_IMPORT_CHUNK_SIZE": "2",
        "LOG_EACH_TASK": "true",  # a test reads which worker received which copy
    }
    return [
        start_worker("booking", "--concurrency", "2", **env),
        start_worker("booking", "--concurrency", "2", "--hostname", "booking-b@%h", **env),
    ]


@pytest.fixture(scope="module")
def exporter(start_worker: Callable[..., WorkerProcess], calendar_dir: Path) -> WorkerProcess:
    """A maintenance worker: the calendar export starts there (it is rate limited)."""
    return start_worker("maintenance", CALENDAR_EXPORT_DIR=str(calendar_dir))


def _emails(broker: Connection, count: int, queue: str = names.EMAIL) -> list[Published]:
    wait_until(lambda: queue_depth(broker, queue)[0] >= count, 30, f"{count} email tasks on {queue}")
    return take_messages(broker, queue)


def _retried(workers: list[WorkerProcess], task_id: str) -> bool:
    return any(f"[{task_id}] retry" in worker.log() for worker in workers)


def _book(seeded: Seeded, ref: str, slot: int = 0, amount: int = 2500) -> Any:
    return producer.enqueue_process_booking(ref, seeded.user_id, seeded.slot_ids[slot], amount)


def test_booking_is_confirmed_charged_and_chains_its_confirmation(
    workers: list[WorkerProcess], database: Any, broker: Connection, ledger: Ledger
) -> None:
    # given a user and a free slot
    seeded = seed(database)

    # when a booking is published
    outcome = _book(seeded, "BK-100").get(timeout=30)

    # then it is confirmed, charged once, and its confirmation email is queued by name
    assert outcome == "Booking BK-100 confirmed"
    booking_id, status = rows(database, "SELECT id, status FROM bookings")[0]
    assert status == "confirmed"
    assert scalar(database, "SELECT status FROM payments") == "processed"
    assert len(ledger.charges) == 1
    (email,) = _emails(broker, 1)
    assert email.task == CONFIRMATION
    assert email.kwargs == {
        "to": "ada@example.com",
        "name": "Ada Lovelace",
        "booking_ref": "BK-100",
        "resource": "Room A",
        "starts_at": "2031-03-14T09:00:00+00:00",
        "ends_at": "2031-03-14T10:00:00+00:00",
        "idempotency_key": f"booking-confirmation:{booking_id}",
    }


def test_same_booking_delivered_twice_in_a_row_books_charges_and_mails_once(
    workers: list[WorkerProcess], database: Any, broker: Connection, ledger: Ledger
) -> None:
    seeded = seed(database)

    first = _book(seeded, "BK-200").get(timeout=30)
    second = _book(seeded, "BK-200").get(timeout=30)

    assert (first, second) == ("Booking BK-200 confirmed", "Already processed")
    assert scalar(database, "SELECT count(*) FROM bookings") == 1
    assert len(ledger.charges) == 1
    assert [e.task for e in _emails(broker, 1)] == [CONFIRMATION]
    assert queue_depth(broker, names.EMAIL)[0] == 0


def test_duplicates_delivered_concurrently_to_two_workers_book_charge_and_mail_once(
    workers: list[WorkerProcess], database: Any, broker: Connection, ledger: Ledger
) -> None:
    # given eight copies of one booking message, published at once
    seeded = seed(database)
    call = {
        "reference": "BK-300",
        "user_id": seeded.user_id,
        "slot_id": seeded.slot_ids[0],
        "amount_cents": 900,
    }
    results = producer.enqueue_many(contracts.PROCESS_BOOKING, [call] * 8, model=contracts.ProcessBookingArgs)

    # when both workers (four processes) run them
    outcomes = sorted(result.get(timeout=60) for result in results)

    # then exactly one delivery booked, charged and chained the email
    assert outcomes == ["Already processed"] * 7 + ["Booking BK-300 confirmed"]
    for worker in workers:  # each worker ran some of the copies
        assert any(f"[{result.id}] received" in worker.log() for result in results), worker.role
    assert scalar(database, "SELECT count(*) FROM bookings") == 1
    assert scalar(database, "SELECT count(*) FROM payments") == 1
    assert len(ledger.charges) == 1
    assert [e.task for e in _emails(broker, 1)] == [CONFIRMATION]


def test_bookings_racing_for_one_slot_yield_exactly_one_confirmation(
    workers: list[WorkerProcess], database: Any, broker: Connection, ledger: Ledger
) -> None:
    # given three slots and four different bookings for each, published at once
    seeded = seed(database, slots=3)
    calls = [
        {"reference": f"RACE-{slot}-{n}", "user_id": seeded.user_id, "slot_id": slot_id, "amount_cents": 1000}
        for n in range(4)
        for slot, slot_id in enumerate(seeded.slot_ids)
    ]
    results = producer.enqueue_many(contracts.PROCESS_BOOKING, calls, model=contracts.ProcessBookingArgs)

    # when the workers race
    outcomes = [result.get(timeout=60) for result in results]

    # then each slot has one confirmed booking, one charge; the others are cancelled uncharged
    assert sum(o.endswith("confirmed") for o in outcomes) == 3
    assert sum(o.endswith("cancelled: slot taken") for o in outcomes) == 9
    per_slot = rows(
        database, "SELECT slot_id, count(*) FROM bookings WHERE status = 'confirmed' GROUP BY slot_id"
    )
    assert sorted(slot for slot, count in per_slot if count == 1) == seeded.slot_ids
    assert len(ledger.charges) == 3
    assert scalar(database, "SELECT count(*) FROM payments WHERE status = 'processed'") == 3
    emails = _emails(broker, 12)
    assert sorted(e.task for e in emails) == [CANCELLATION] * 9 + [CONFIRMATION] * 3
    assert {e.kwargs["reason"] for e in emails if e.task == CANCELLATION} == {"slot taken"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"reference": 5, "user_id": 1, "slot_id": 1, "amount_cents": 100},
            InvalidTaskArguments,
            "reference",
        ),
        (
            {"reference": "N-1", "user_id": "1", "slot_id": 1, "amount_cents": 100},
            InvalidTaskArguments,
            "user_id",
        ),
        (
            {"reference": "N-1", "user_id": 1, "slot_id": 1, "amount_cents": -100},
            InvalidTaskArguments,
            "amount_cents",
        ),
        (
            {"reference": "N-1", "user_id": 1, "slot_id": 1, "amount_cents": 1.5},
            InvalidTaskArguments,
            "amount_cents",
        ),
        (
            {"reference": "N-1", "user_id": 999_999, "slot_id": 1, "amount_cents": 100},
            UnknownReference,
            "unknown",
        ),
    ],
)
def test_invalid_booking_fails_without_retry_and_is_dead_lettered(
    workers: list[WorkerProcess],
    database: Any,
    broker: Connection,
    kwargs: dict[str, Any],
    error: type,
    match: str,
) -> None:
    # given a message that bypassed the producer's validation
    seed(database)
    result = celery_app.send_task(contracts.PROCESS_BOOKING, kwargs=kwargs)

    # when a worker runs it
    with pytest.raises(error, match=match):
        result.get(timeout=30)

    # then it is a FAILURE, never retried, dead-lettered, and nothing was booked
    assert result.status == states.FAILURE
    wait_until(lambda: queue_depth(broker, names.dlq(names.BOOKING))[0] == 1, 15, "booking.dlq depth 1")
    assert not _retried(workers, result.id)
    assert scalar(database, "SELECT count(*) FROM bookings") == 0


def test_cancelling_an_unknown_booking_fails_and_is_dead_lettered(
    workers: list[WorkerProcess], broker: Connection
) -> None:
    result = cancel_booking.delay(424_242)
    with pytest.raises(BookingNotFound, match="booking 424242 does not exist"):
        result.get(timeout=30)
    wait_until(lambda: queue_depth(broker, names.dlq(names.BOOKING))[0] == 1, 15, "booking.dlq depth 1")
    assert not _retried(workers, result.id)


@pytest.mark.timeout(180)
def test_transient_database_error_is_retried_with_backoff(
    workers: list[WorkerProcess], database: Any, ledger: Ledger
) -> None:
    # given the slot's row locked by another transaction (the worker's lock wait times out);
    # NO KEY UPDATE lets the booking row be inserted and blocks the reservation
    seeded = seed(database)
    blocker = database.connect()
    blocker.begin()
    blocker.execute(
        text("SELECT id FROM time_slots WHERE id = :s FOR NO KEY UPDATE"), {"s": seeded.slot_ids[0]}
    )
    try:
        # when the booking is published
        result = _book(seeded, "BK-LOCK")

        # then the lock timeout is retried (not failed) while the lock is held
        wait_until(lambda: _retried(workers, result.id), 60, "a retry of the booking task")
        assert scalar(database, "SELECT status FROM bookings") == "pending"
    finally:
        blocker.rollback()
        blocker.close()

    # and once the lock is gone the retry books it
    assert result.get(timeout=60) == "Booking BK-LOCK confirmed"
    assert len(ledger.charges) == 1


def test_payment_provider_outage_is_retried_then_charges_once(
    workers: list[WorkerProcess], database: Any, ledger: Ledger
) -> None:
    # given a provider that answers 503 once
    seeded = seed(database)
    ledger.unavailable = 1

    # when a paid booking is published
    result = _book(seeded, "BK-503")

    # then the task retried and the one charge went through
    assert result.get(timeout=60) == "Booking BK-503 confirmed"
    assert _retried(workers, result.id)
    assert len(ledger.charges) == 1 and ledger.requests == 2


@pytest.mark.timeout(180)
def test_worker_killed_after_the_charge_redelivers_and_charges_once(
    workers: list[WorkerProcess], database: Any, broker: Connection, ledger: Ledger
) -> None:
    # given a provider that makes the charge but holds its reply
    seeded = seed(database)
    release = threading.Event()
    ledger.hold_next_charge = release
    result = _book(seeded, "BK-KILL")
    wait_until(lambda: ledger.held == 1, 30, "the charge to reach the provider")

    # when the pool process waiting for the reply is killed (its transaction dies with it)
    (application,) = rows(
        database,
        "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() "
        "AND state = 'idle in transaction' AND application_name LIKE 'magnetiq-%'",
    )[0]
    child = int(application.removeprefix("magnetiq-"))
    assert any(child in descendants(w.proc.pid) for w in workers), "the transaction belongs to a test worker"
    os.kill(child, signal.SIGKILL)
    release.set()

    # then the message is redelivered and the retry's charge is the same charge
    assert result.get(timeout=90) == "Booking BK-KILL confirmed"
    assert len(ledger.charges) == 1
    assert ledger.requests == 2
    assert scalar(database, "SELECT provider_reference FROM payments") == next(iter(ledger.charges))
    assert [e.task for e in _emails(broker, 1)] == [CONFIRMATION]


def test_cancel_refunds_once_and_mails_once(
    workers: list[WorkerProcess], database: Any, broker: Connection, ledger: Ledger
) -> None:
    # given a confirmed, paid booking
    seeded = seed(database)
    _book(seeded, "BK-400").get(timeout=30)
    booking_id = scalar(database, "SELECT id FROM bookings")
    take_messages(broker, names.EMAIL)

    # when its cancellation is delivered twice at once
    cancels = [producer.enqueue_cancel_booking(booking_id, "customer asked") for _ in range(2)]
    outcomes = sorted(c.get(timeout=30) for c in cancels)

    # then one refund and one cancellation email
    assert outcomes == ["Already processed", "Booking BK-400 cancelled, refunded"]
    assert len(ledger.refunds) == 1
    assert scalar(database, "SELECT status FROM payments") == "refunded"
    (email,) = _emails(broker, 1)
    assert (email.task, email.kwargs["reason"]) == (CANCELLATION, "customer asked")
    assert email.kwargs["idempotency_key"] == f"booking-cancellation:{booking_id}"
    assert "ends_at" not in email.kwargs


def test_reminders_fan_out_as_a_group_once(
    workers: list[WorkerProcess], database: Any, broker: Connection, payment_provider: tuple[str, Ledger]
) -> None:
    # given three confirmed bookings on the day
    seeded = seed(database, slots=3)
    client = HttpPaymentProvider(payment_provider[0])
    for i, slot in enumerate(seeded.slot_ids):
        booking_service.place_booking(
            database, client, RecordingNotifier(), BookingRequest(f"REM-{i}", seeded.user_id, slot, 0, "EUR")
        )

    # when the day's reminders are sent twice
    day = DAY.date().isoformat()
    first = send_booking_reminders.delay(day).get(timeout=30)
    second = send_booking_reminders.delay(day).get(timeout=30)

    # then one group of three reminder tasks was published
    assert (first, second) == (
        f"Queued 3 booking reminders for {day}",
        f"Queued 0 booking reminders for {day}",
    )
    emails = _emails(broker, 3, names.BULK)  # reminders go out in the bulk lane
    assert [e.task for e in emails] == [REMINDER] * 3
    assert len({e.group for e in emails}) == 1 and emails[0].group is not None
    ids = [r.id for r in rows(database, "SELECT id FROM bookings ORDER BY id")]
    assert sorted(e.kwargs["idempotency_key"] for e in emails) == [f"booking-reminder:{i}" for i in ids]


def test_reminder_runs_at_once_queue_one_reminder_per_booking(
    workers: list[WorkerProcess], database: Any, broker: Connection, payment_provider: tuple[str, Ledger]
) -> None:
    # given four confirmed bookings on the day
    seeded = seed(database, slots=4)
    client = HttpPaymentProvider(payment_provider[0])
    for i, slot in enumerate(seeded.slot_ids):
        booking_service.place_booking(
            database, client, RecordingNotifier(), BookingRequest(f"RC-{i}", seeded.user_id, slot, 0, "EUR")
        )

    # when three reminder runs for the day are delivered at once
    runs = [send_booking_reminders.delay(DAY.date().isoformat()) for _ in range(3)]
    counts = [int(run.get(timeout=30).split()[1]) for run in runs]

    # then the runs split the bookings between them: one reminder each
    assert sum(counts) == 4
    emails = _emails(broker, 4, names.BULK)
    keys = sorted(e.kwargs["idempotency_key"] for e in emails)
    ids = [r.id for r in rows(database, "SELECT id FROM bookings ORDER BY id")]
    assert keys == sorted(f"booking-reminder:{i}" for i in ids)


def test_import_file_is_validated_chunked_closed_and_notified(
    workers: list[WorkerProcess], database: Any, broker: Connection
) -> None:
    # given an uploaded CSV with three good and five bad rows
    seed(database, slots=3)
    import_id = create_import(database, "staff.csv", IMPORT_CSV)

    # when its import is delivered twice at once (chunks of two rows)
    # and the producer reads each delivery's result, as the seed reads a chain's
    outcomes = [r.get(timeout=60) for r in [producer.enqueue_import_bookings(import_id) for _ in range(2)]]

    # then each result is the chain's last step: the import closed with its totals
    totals = f"Import {import_id} completed: 3 imported, 5 rejected"
    assert all(outcome.startswith(totals) for outcome in outcomes), outcomes
    (summary,) = rows(
        database, "SELECT status, total_rows, chunk_count, imported_rows, error_rows FROM booking_imports"
    )
    assert tuple(summary) == ("completed", 8, 2, 3, 5)
    booked = rows(
        database,
        "SELECT id FROM bookings WHERE source = 'import' AND status = 'confirmed' AND import_id = :id",
        id=import_id,
    )
    assert len(booked) == 3
    assert sorted(import_errors(database, import_id)) == [4, 5, 6, 8, 9]

    # and each imported booking's confirmation was queued once, by the two runs together
    queued = sorted(int(outcome.split(", ")[-1].split()[0]) for outcome in outcomes)
    assert sum(queued) == 3
    emails = _emails(broker, 3)
    assert sorted(e.kwargs["idempotency_key"] for e in emails) == sorted(
        f"booking-confirmation:{row.id}" for row in booked
    )
    assert {e.task for e in emails} == {CONFIRMATION}


def test_calendar_feeds_and_payment_reconciliation(
    workers: list[WorkerProcess],
    exporter: WorkerProcess,
    database: Any,
    ledger: Ledger,
    calendar_dir: Path,
    tmp_path: Path,
) -> None:
    # given two paid bookings
    seeded = seed(database, slots=2)
    for i in range(2):
        _book(seeded, f"SYNC-{i}", slot=i).get(timeout=30)

    # and the feed of a resource deleted since the last export
    stale = calendar_dir / "resource-999999.ics"
    stale.write_bytes(b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")

    # when the calendars are exported (a chord: a task per feed, then a reconciling body)
    # and a provider statement is reconciled
    exported = export_booking_calendars.delay().get(timeout=30)
    statement = ledger.write_statement(tmp_path / "statement.csv")
    summary = reconcile_payments.delay(str(statement)).get(timeout=30)

    # then the resource's feed lists both bookings, the stale feed is gone, and every payment matches
    assert exported == "Exported 1 calendars, removed 1"
    assert not stale.exists()
    feed = Calendar.from_ical((calendar_dir / f"resource-{seeded.resource_id}.ics").read_bytes())
    assert sorted(str(e["uid"]) for e in feed.walk("VEVENT")) == [
        "booking-SYNC-0@magnetiq",
        "booking-SYNC-1@magnetiq",
    ]
    assert summary == {"matched": 2, "mismatched": [], "unknown": [], "missing": []}
    assert scalar(database, "SELECT count(*) FROM payments WHERE reconciled_at IS NOT NULL") == 2
