"""End to end: a booking on a real booking worker and the payment provider, mailed by a real email worker."""

from __future__ import annotations

from collections.abc import Callable
from email.message import Message
from typing import Any

import pytest
from icalendar import Calendar

from app import producer
from tests.integration.booking_helpers import DAY, rows, scalar, seed
from tests.support.payment_provider import Ledger
from tests.support.smtp_server import SmtpSink
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess


@pytest.fixture(scope="module")
def email_worker(start_worker: Callable[..., WorkerProcess], smtp_sink: SmtpSink) -> WorkerProcess:
    """A real email worker sending to the module's SMTP sink."""
    return start_worker("email", SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_sink.port))


@pytest.fixture(scope="module")
def booking_worker(start_worker: Callable[..., WorkerProcess], email_worker: WorkerProcess) -> WorkerProcess:
    """A real booking worker (two processes) charging the tests' payment provider."""
    return start_worker("booking", "--concurrency", "2")


def _parts(mail: Message) -> dict[str, bytes]:
    return {
        part.get_content_type(): part.get_payload(decode=True)
        for part in mail.walk()
        if not part.is_multipart()
    }


def test_a_booking_published_twice_is_charged_once_and_its_confirmation_arrives_once(
    booking_worker: WorkerProcess, sink: SmtpSink, ledger: Ledger, database: Any
) -> None:
    # given a user and a free slot
    seeded = seed(database, slots=1)

    # when the producer publishes the same paid booking twice
    published = [
        producer.enqueue_process_booking("BK-E2E", seeded.user_id, seeded.slot_ids[0], 2500) for _ in "ab"
    ]

    # then one run books it and the other finds it done
    assert sorted(result.get(timeout=60) for result in published) == [
        "Already processed",
        "Booking BK-E2E confirmed",
    ]
    [booking] = rows(database, "SELECT id, status, confirmation_queued_at FROM bookings")
    assert booking.status == "confirmed" and booking.confirmation_queued_at is not None

    # and the provider charged it once, under the payment's key
    assert [(c["amount_cents"], c["currency"]) for c in ledger.charges.values()] == [(2500, "EUR")]
    assert list(ledger.replies) == ["booking:BK-E2E"]
    assert scalar(database, "SELECT status FROM payments WHERE booking_id = :b", b=booking.id) == "processed"

    # and the confirmation reached the SMTP server with the calendar invitation
    [mail] = sink.wait_for(1, timeout=60)
    assert mail["To"] == "ada@example.com"
    assert str(mail["Subject"]).startswith("Booking confirmed: Room A")
    calendar = Calendar.from_ical(_parts(mail)["text/calendar"])
    [event] = calendar.walk("VEVENT")
    assert calendar["METHOD"] == "REQUEST"
    assert str(event["UID"]) == "BK-E2E@magnetiq.mail"
    assert event.decoded("DTSTART") == DAY.replace(hour=9)
    key = f"booking-confirmation:{booking.id}"
    wait_until(
        lambda: rows(database, "SELECT idempotency_key, status FROM email_deliveries") == [(key, "sent")],
        30,
        "the confirmation recorded sent",
    )

    # when the booking is published a third time, after the email went out
    assert producer.enqueue_process_booking("BK-E2E", seeded.user_id, seeded.slot_ids[0], 2500).get(
        timeout=60
    ) == ("Already processed")

    # then nothing more is charged or mailed: a later email is the only other one to arrive
    producer.enqueue_welcome_email("ada@example.com", "Ada").get(timeout=60)
    mails = sink.wait_for(2, timeout=60)
    assert [str(m["Subject"]).split(":")[0].split(",")[0] for m in mails] == [
        "Booking confirmed",
        "Welcome to Magnetiq",
    ]
    assert len(ledger.charges) == 1
    assert rows(
        database, "SELECT idempotency_key FROM email_deliveries WHERE idempotency_key LIKE 'booking-%'"
    ) == [(key,)]
