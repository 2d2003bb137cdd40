"""The booking domain on real PostgreSQL and a real HTTP payment provider (no broker)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from icalendar import Calendar
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.booking import bookings, imports, reminders, sync
from app.booking.bookings import BookingRequest, ReferenceConflict, UnknownReference
from app.booking.provider import (
    HttpPaymentProvider,
    PaymentDeclined,
    PaymentProviderNotConfigured,
    PaymentProviderUnavailable,
)
from tests.integration.booking_helpers import (
    DAY,
    IMPORT_CSV,
    RecordingNotifier,
    booking_statuses,
    insert_booking,
    move_slot,
    rows,
    scalar,
    seed,
)
from tests.support.payment_provider import Ledger


@pytest.fixture
def provider(payment_provider: tuple[str, Any], ledger: Ledger) -> HttpPaymentProvider:
    return HttpPaymentProvider(payment_provider[0], timeout=5)


def _book(
    database: Any, provider: Any, notifier: Any, ref: str, slot_id: int, user_id: int, amount: int = 2500
) -> str:
    request = BookingRequest(ref, user_id, slot_id, amount, "EUR")
    return bookings.place_booking(database, provider, notifier, request)


def test_booking_is_charged_confirmed_and_notified_once(database: Any, provider: Any, ledger: Ledger) -> None:
    # given a user and a free slot
    seeded = seed(database)
    notifier = RecordingNotifier()

    # when the same booking is placed twice
    first = _book(database, provider, notifier, "BK-1", seeded.slot_ids[0], seeded.user_id)
    second = _book(database, provider, notifier, "BK-1", seeded.slot_ids[0], seeded.user_id)

    # then one confirmed booking, one charge, one confirmation
    assert (first, second) == ("Booking BK-1 confirmed", "Already processed")
    (booking,) = rows(database, "SELECT status, confirmed_at, confirmation_queued_at FROM bookings")
    assert booking.status == "confirmed" and booking.confirmation_queued_at is not None
    (payment,) = rows(database, "SELECT status, provider_reference, idempotency_key FROM payments")
    assert (payment.status, payment.idempotency_key) == ("processed", "booking:BK-1")
    assert list(ledger.charges) == [payment.provider_reference]
    ((kind, notice),) = notifier.sent
    assert kind == "confirmation"
    assert (notice.to, notice.booking_ref, notice.resource) == ("ada@example.com", "BK-1", "Room A")
    assert notice.starts_at == "2031-03-14T09:00:00+00:00" and notice.ends_at == "2031-03-14T10:00:00+00:00"
    assert notice.idempotency_key(kind) == f"booking-confirmation:{notice.booking_id}"


def test_second_booking_of_a_slot_is_cancelled_uncharged(
    database: Any, provider: Any, ledger: Ledger
) -> None:
    seeded = seed(database)
    notifier = RecordingNotifier()
    _book(database, provider, notifier, "BK-1", seeded.slot_ids[0], seeded.user_id)

    outcome = _book(database, provider, notifier, "BK-2", seeded.slot_ids[0], seeded.user_id)

    assert outcome == "Booking BK-2 cancelled: slot taken"
    assert len(ledger.charges) == 1
    assert notifier.kinds() == ["confirmation", "cancellation"]
    assert notifier.sent[1][1].reason == "slot taken"
    assert scalar(database, "SELECT status FROM payments WHERE idempotency_key = 'booking:BK-2'") == "pending"


def test_declined_charge_cancels_the_booking(database: Any, provider: Any, ledger: Ledger) -> None:
    seeded = seed(database)
    ledger.declined.add(4002)
    notifier = RecordingNotifier()

    outcome = _book(database, provider, notifier, "BK-D", seeded.slot_ids[0], seeded.user_id, amount=4002)

    assert outcome == "Booking BK-D cancelled: payment declined"
    assert scalar(database, "SELECT status FROM payments") == "failed"
    assert ledger.charges == {}
    assert notifier.kinds() == ["cancellation"]


def test_free_booking_needs_no_payment(database: Any, provider: Any, ledger: Ledger) -> None:
    seeded = seed(database)
    assert _book(
        database, provider, RecordingNotifier(), "F-1", seeded.slot_ids[0], seeded.user_id, 0
    ).endswith("confirmed")
    assert scalar(database, "SELECT count(*) FROM payments") == 0
    assert ledger.requests == 0


def test_unknown_user_or_slot_and_reused_reference_are_refused(database: Any, provider: Any) -> None:
    seeded = seed(database)
    with pytest.raises(UnknownReference):
        _book(database, provider, RecordingNotifier(), "X-1", 999_999, seeded.user_id)
    with pytest.raises(UnknownReference):
        _book(database, provider, RecordingNotifier(), "X-1", seeded.slot_ids[0], 999_999)
    _book(database, provider, RecordingNotifier(), "X-2", seeded.slot_ids[0], seeded.user_id)
    with pytest.raises(ReferenceConflict):
        _book(database, provider, RecordingNotifier(), "X-2", seeded.slot_ids[1], seeded.user_id)
    assert scalar(database, "SELECT count(*) FROM bookings") == 1


def test_database_refuses_two_confirmed_bookings_of_a_slot(database: Any) -> None:
    # given a slot with a confirmed booking, written without the service
    seeded = seed(database)
    insert = (
        "INSERT INTO bookings (reference, user_id, slot_id, status, confirmed_at) "
        "VALUES (:ref, :u, :s, 'confirmed', now())"
    )
    with database.begin() as db:
        db.execute(text(insert), {"ref": "A", "u": seeded.user_id, "s": seeded.slot_ids[0]})

    # when a second confirmed booking of that slot is written directly
    # then the partial unique index refuses it
    with pytest.raises(IntegrityError, match="uq_bookings_confirmed_slot"), database.begin() as db:
        db.execute(text(insert), {"ref": "B", "u": seeded.user_id, "s": seeded.slot_ids[0]})


@pytest.mark.parametrize(
    ("sql", "constraint"),
    [
        (
            "INSERT INTO payments (amount_cents, idempotency_key) VALUES (100, 'k'), (200, 'k')",
            "uq_payments_idempotency_key",
        ),
        ("INSERT INTO payments (amount_cents) VALUES (-5)", "ck_payments_amount_positive"),
        ("INSERT INTO payments (amount_cents, currency) VALUES (5, 'eur')", "ck_payments_currency_iso"),
        ("UPDATE bookings SET status = 'paid'", "ck_bookings_status_known"),
        ("UPDATE bookings SET status = 'confirmed'", "ck_bookings_confirmed_has_time"),
    ],
)
def test_database_constraints(database: Any, sql: str, constraint: str) -> None:
    seeded = seed(database)
    with database.begin() as db:
        db.execute(
            text("INSERT INTO bookings (reference, user_id, slot_id) VALUES ('P', :u, :s)"),
            {"u": seeded.user_id, "s": seeded.slot_ids[0]},
        )
    with pytest.raises(IntegrityError, match=constraint), database.begin() as db:
        db.execute(text(sql))


def test_cancel_refunds_once_and_notifies_once(database: Any, provider: Any, ledger: Ledger) -> None:
    seeded = seed(database)
    notifier = RecordingNotifier()
    _book(database, provider, notifier, "C-1", seeded.slot_ids[0], seeded.user_id)
    booking_id = scalar(database, "SELECT id FROM bookings")

    first = bookings.cancel_booking(database, provider, notifier, booking_id, "customer asked")
    second = bookings.cancel_booking(database, provider, notifier, booking_id, "customer asked")

    assert (first, second) == ("Booking C-1 cancelled, refunded", "Already processed")
    assert len(ledger.refunds) == 1 and len(ledger.charges) == 1
    (payment,) = rows(database, "SELECT status, refund_reference FROM payments")
    assert payment.status == "refunded" and payment.refund_reference in ledger.refunds
    assert notifier.kinds() == ["confirmation", "cancellation"]
    assert notifier.sent[1][1].reason == "customer asked"
    # the slot is free again
    assert _book(database, provider, notifier, "C-2", seeded.slot_ids[0], seeded.user_id).endswith(
        "confirmed"
    )


def test_cancel_unknown_booking_is_not_found(database: Any, provider: Any) -> None:
    with pytest.raises(bookings.BookingNotFound, match="booking 4242 does not exist"):
        bookings.cancel_booking(database, provider, RecordingNotifier(), 4242, None)


def test_expire_pending_bookings_older_than(database: Any) -> None:
    seeded = seed(database)
    with database.begin() as db:
        for ref, age, slot in (("OLD", "2 hours", 0), ("NEW", "1 minute", 1)):
            booking_id = db.execute(
                text(
                    "INSERT INTO bookings (reference, user_id, slot_id, created_at) "
                    "VALUES (:r, :u, :s, now() - CAST(:age AS interval)) RETURNING id"
                ),
                {"r": ref, "u": seeded.user_id, "s": seeded.slot_ids[slot], "age": age},
            ).scalar_one()
            db.execute(
                text("INSERT INTO payments (booking_id, amount_cents, idempotency_key) VALUES (:b, 100, :k)"),
                {"b": booking_id, "k": ref},
            )

    assert bookings.expire_pending_bookings(database, timedelta(hours=1)) == 1
    assert bookings.expire_pending_bookings(database, timedelta(hours=1)) == 0
    assert {r.reference: r.status for r in rows(database, "SELECT reference, status FROM bookings")} == {
        "OLD": "expired",
        "NEW": "pending",
    }
    assert scalar(database, "SELECT status FROM payments WHERE idempotency_key = 'OLD'") == "failed"


def test_expiry_keeps_charged_and_confirmed_bookings_and_queues_one_notice_each(database: Any) -> None:
    # given old pending bookings (unpaid, free, charged), an old confirmed one and a fresh pending one
    seeded = seed(database, slots=5)
    for slot, (ref, status, age, payment) in zip(
        seeded.slot_ids,
        (
            ("UNPAID", "pending", "2 hours", "pending"),
            ("FREE", "pending", "2 hours", None),
            ("CHARGED", "pending", "2 hours", "processed"),
            ("CONFIRMED", "confirmed", "2 hours", "processed"),
            ("FRESH", "pending", "1 minute", "pending"),
        ),
        strict=True,
    ):
        insert_booking(database, ref, seeded.user_id, slot, status, age, payment)

    # when pending bookings older than an hour expire, twice
    notifier = RecordingNotifier()
    assert bookings.expire_pending_bookings(database, timedelta(hours=1), notifier) == 2
    assert bookings.expire_pending_bookings(database, timedelta(hours=1), notifier) == 0

    # then only the unpaid ones expired, each with one notice keyed by its booking
    assert booking_statuses(database) == {
        "UNPAID": "expired",
        "FREE": "expired",
        "CHARGED": "pending",
        "CONFIRMED": "confirmed",
        "FRESH": "pending",
    }
    sent = [(kind, n.booking_ref, n.idempotency_key(kind)) for kind, n in notifier.sent]
    assert sent == [("expired", "UNPAID", "booking-expired:1"), ("expired", "FREE", "booking-expired:2")]
    assert (
        scalar(database, "SELECT status FROM payments WHERE idempotency_key = 'booking:CHARGED'")
        == "processed"
    )


def test_reminders_cover_a_days_confirmed_bookings_once(database: Any, provider: Any) -> None:
    seeded = seed(database, slots=3)
    other_day = seed(database, slots=1, resource="Room B")
    move_slot(database, other_day.slot_ids[0], days=1)
    notifier = RecordingNotifier()
    for i, slot in enumerate([*seeded.slot_ids[:2], other_day.slot_ids[0]]):
        _book(database, provider, notifier, f"R-{i}", slot, seeded.user_id, 0)

    due = reminders.bookings_needing_reminders(database, DAY.date())
    assert [n.booking_ref for n in due] == ["R-0", "R-1"]
    reminding = RecordingNotifier()
    assert reminders.queue_reminders(database, reminding, DAY.date()) == 2
    assert reminders.queue_reminders(database, reminding, DAY.date()) == 0
    assert [(k, n.booking_ref) for k, n in reminding.sent] == [("reminder", "R-0"), ("reminder", "R-1")]
    assert reminders.bookings_needing_reminders(database, DAY.date()) == []
    assert reminders.queue_reminders(database, reminding, date(2031, 3, 15)) == 1


def test_import_validates_every_row_and_books_the_good_ones_in_chunks(database: Any) -> None:
    seed(database, slots=3)
    import_id = imports.create_import(database, "staff.csv", IMPORT_CSV)

    chunks = imports.start_import(database, import_id, chunk_size=2)
    assert chunks == [0, 1]
    assert imports.start_import(database, import_id, chunk_size=2) == [0, 1]
    assert imports.import_chunk(database, import_id, 0) == 2
    assert imports.import_chunk(database, import_id, 1) == 1
    assert imports.import_chunk(database, import_id, 1) == 1  # a re-run books nothing more
    report = {"import_id": import_id, "status": "completed", "imported": 3, "rejected": 5}
    assert imports.finish_import(database, import_id) == report
    assert imports.finish_import(database, import_id) == report
    assert imports.start_import(database, import_id, chunk_size=2) == []

    # and the bookings it made are confirmed once each
    notifying = RecordingNotifier()
    assert imports.notify_imported(database, notifying, import_id) == 3
    assert imports.notify_imported(database, notifying, import_id) == 0
    assert sorted(n.booking_ref for _, n in notifying.sent) == ["IMP-1", "IMP-2", "IMP-6"]
    assert {kind for kind, _ in notifying.sent} == {"confirmation"}

    booked = rows(database, "SELECT reference, status, source FROM bookings ORDER BY reference")
    assert [(b.reference, b.status, b.source) for b in booked] == [
        ("IMP-1", "confirmed", "import"),
        ("IMP-2", "confirmed", "import"),
        ("IMP-6", "confirmed", "import"),
    ]
    assert scalar(database, "SELECT count(*) FROM users") == 3  # ada (seed), bo, di
    assert scalar(database, "SELECT count(*) FROM payments WHERE status = 'pending'") == 2
    errors = imports.import_errors(database, import_id)
    assert sorted(errors) == [4, 5, 6, 8, 9]
    assert "email" in errors[4]
    assert "no slot of Room Z" in errors[5]
    assert "amount_cents" in errors[6] and "currency" in errors[6]
    assert "already on line 2" in errors[8]
    assert "starts_at" in errors[9]


def test_import_of_taken_slot_reports_a_row_error(database: Any, provider: Any) -> None:
    seeded = seed(database, slots=1)
    _book(database, provider, RecordingNotifier(), "TAKEN", seeded.slot_ids[0], seeded.user_id, 0)
    import_id = imports.create_import(
        database, "late.csv", IMPORT_CSV.splitlines()[0] + "\n" + IMPORT_CSV.splitlines()[1] + "\n"
    )

    assert imports.start_import(database, import_id, chunk_size=10) == [0]
    assert imports.import_chunk(database, import_id, 0) == 0
    assert imports.finish_import(database, import_id) == {
        "import_id": import_id,
        "status": "completed",
        "imported": 0,
        "rejected": 1,
    }
    assert imports.import_errors(database, import_id) == {2: "reference exists or slot already booked"}


def test_import_without_the_columns_is_one_error(database: Any) -> None:
    import_id = imports.create_import(database, "bad.csv", "reference,email\nA,a@example.com\n")
    assert imports.start_import(database, import_id, chunk_size=10) == []
    assert imports.finish_import(database, import_id) == {
        "import_id": import_id,
        "status": "completed",
        "imported": 0,
        "rejected": 1,
    }
    assert (
        "missing columns: amount_cents, currency, name, resource, starts_at"
        in imports.import_errors(database, import_id)[1]
    )


def test_calendar_feeds_per_resource(database: Any, provider: Any, tmp_path: Path) -> None:
    seeded = seed(database, slots=2)
    empty = seed(database, slots=1, resource="Room B")
    for i, slot in enumerate(seeded.slot_ids):
        _book(database, provider, RecordingNotifier(), f"CAL-{i}", slot, seeded.user_id, 0)

    assert sync.export_calendars(database, tmp_path / "feeds") == 2

    feed = Calendar.from_ical((tmp_path / "feeds" / f"resource-{seeded.resource_id}.ics").read_bytes())
    events = feed.walk("VEVENT")
    assert [str(e["uid"]) for e in events] == ["booking-CAL-0@magnetiq", "booking-CAL-1@magnetiq"]
    assert events[0].decoded("dtstart") == DAY + timedelta(hours=9)
    assert "ada@example.com" not in feed.to_ical().decode()
    other = Calendar.from_ical((tmp_path / "feeds" / f"resource-{empty.resource_id}.ics").read_bytes())
    assert other.walk("VEVENT") == []

    # a resource that is gone gets no feed, and a feed of one is pruned
    assert sync.export_calendar(database, tmp_path / "feeds", 999_999) is False
    (tmp_path / "feeds" / "resource-999999.ics").write_bytes(b"")
    kept = {seeded.resource_id, empty.resource_id}
    assert sync.prune_calendars(tmp_path / "feeds", kept) == ["resource-999999.ics"]
    assert sorted(p.name for p in (tmp_path / "feeds").iterdir()) == sorted(f"resource-{i}.ics" for i in kept)


def test_reconcile_payments_against_a_statement(
    database: Any, provider: Any, ledger: Ledger, tmp_path: Path
) -> None:
    seeded = seed(database, slots=3)
    for i, slot in enumerate(seeded.slot_ids):
        _book(database, provider, RecordingNotifier(), f"REC-{i}", slot, seeded.user_id, 1000 + i)
    refs = [
        r.provider_reference for r in rows(database, "SELECT provider_reference FROM payments ORDER BY id")
    ]
    ledger.charges[refs[1]]["amount_cents"] = 9999  # the provider disagrees on one amount
    del ledger.charges[refs[2]]  # and does not list another
    statement = ledger.write_statement(
        tmp_path / "statement.csv",
        [{"reference": "ch_foreign", "amount_cents": 5, "currency": "EUR", "status": "charged"}],
    )

    result = sync.reconcile_payments(database, statement)

    assert result.summary() == {
        "matched": 1,
        "mismatched": [refs[1]],
        "unknown": ["ch_foreign"],
        "missing": [refs[2]],
    }
    reconciled = scalar(
        database, "SELECT array_agg(provider_reference) FROM payments WHERE reconciled_at IS NOT NULL"
    )
    assert reconciled == [refs[0]]
    with pytest.raises(sync.StatementInvalid):
        sync.reconcile_payments(database, tmp_path / "missing.csv")


def test_provider_client_maps_replies_to_errors(payment_provider: tuple[str, Any], ledger: Ledger) -> None:
    client = HttpPaymentProvider(payment_provider[0], timeout=5)
    first = client.charge("k1", 100, "EUR", "x")
    assert client.charge("k1", 100, "EUR", "x") == first
    assert len(ledger.charges) == 1 and ledger.requests == 2
    ledger.declined.add(402)
    with pytest.raises(PaymentDeclined, match="402"):
        client.charge("k2", 402, "EUR", "x")
    ledger.unavailable = 1
    with pytest.raises(PaymentProviderUnavailable, match="503"):
        client.charge("k3", 100, "EUR", "x")
    with pytest.raises(PaymentProviderNotConfigured):
        HttpPaymentProvider(None).charge("k4", 100, "EUR", "x")
    with pytest.raises(PaymentProviderUnavailable):
        HttpPaymentProvider("http://127.0.0.1:9", timeout=2).charge("k5", 100, "EUR", "x")


def test_cancelling_a_pending_booking_fails_its_uncharged_payment(
    database: Any, provider: Any, ledger: Ledger
) -> None:
    # given a pending booking whose payment was never charged
    seeded = seed(database)
    with database.begin() as db:
        booking_id = db.execute(
            text("INSERT INTO bookings (reference, user_id, slot_id) VALUES ('PEND', :u, :s) RETURNING id"),
            {"u": seeded.user_id, "s": seeded.slot_ids[0]},
        ).scalar_one()
        db.execute(
            text(
                "INSERT INTO payments (booking_id, amount_cents, idempotency_key) "
                "VALUES (:b, 700, 'booking:PEND')"
            ),
            {"b": booking_id},
        )
    notifier = RecordingNotifier()

    # when it is cancelled
    outcome = bookings.cancel_booking(database, provider, notifier, booking_id, None)

    # then nothing is refunded, the payment fails, and the cancellation is mailed
    assert outcome == "Booking PEND cancelled"
    assert ledger.requests == 0
    assert rows(database, "SELECT status, failure_reason FROM payments")[0] == ("failed", "cancelled")
    assert scalar(database, "SELECT status_reason FROM bookings") == "cancelled by request"
    assert notifier.kinds() == ["cancellation"]


def test_paid_booking_without_a_provider_fails_and_stays_pending(database: Any) -> None:
    # given no payment provider configured
    seeded = seed(database)
    unconfigured = HttpPaymentProvider(None)

    # when a paid booking is placed, it fails; a free one still books
    with pytest.raises(PaymentProviderNotConfigured):
        _book(database, unconfigured, RecordingNotifier(), "NP-1", seeded.slot_ids[0], seeded.user_id)
    free = _book(database, unconfigured, RecordingNotifier(), "NP-2", seeded.slot_ids[1], seeded.user_id, 0)

    # then the paid one is left pending (for expiry), uncharged, unmailed
    assert free == "Booking NP-2 confirmed"
    statuses = {r.reference: r.status for r in rows(database, "SELECT reference, status FROM bookings")}
    assert statuses == {"NP-1": "pending", "NP-2": "confirmed"}
    assert scalar(database, "SELECT status FROM payments") == "pending"
