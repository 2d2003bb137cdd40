"""Email end to end through a real gevent email worker to a scripted SMTP server.

Covers every template, sent-once (redelivery, separate publishes, retries),
the failure classes (4xx and drops retry, 5xx and invalid input go to the DLQ
without retry) and 100 sends overlapping in one worker.
"""

from __future__ import annotations

from collections.abc import Callable
from email.message import Message
from typing import Any

import pytest
from celery import states
from icalendar import Calendar
from kombu import Connection
from sqlalchemy import text

from app import producer
from app.celery_app import celery_app
from app.contracts import (
    SEND_BOOKING_CONFIRMATION,
    SEND_WELCOME_EMAIL,
    InvalidTaskArguments,
    WelcomeEmailArgs,
)
from app.mail.service import message_id
from app.mail.smtp import SmtpPermanentError
from app.tasks.email_tasks import send_welcome_email
from routing import names
from tests.integration.sent_mark_refusal import refusing_sent_marks
from tests.support.broker import queue_depth
from tests.support.smtp_server import ScriptedHandler, ScriptedSmtp
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess

START, END = "2026-12-01T10:00:00+01:00", "2026-12-01T11:30:00+01:00"
BOOKING = {"booking_ref": "BK-42", "resource": "Studio A", "starts_at": START}


@pytest.fixture(scope="module")
def email_worker(start_worker: Callable[..., WorkerProcess], smtp_server: ScriptedSmtp) -> WorkerProcess:
    # SMTP_TIMEOUT above the slowest reply scripted here (8 s); a test reads what a
    # redelivered task returned from its succeeded line
    return start_worker(
        "email",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp_server.port),
        SMTP_TIMEOUT="30",
        LOG_EACH_TASK="true",
    )


@pytest.fixture(scope="module")
def bulk_worker(start_worker: Callable[..., WorkerProcess], smtp_server: ScriptedSmtp) -> WorkerProcess:
    """The reminders' lane (``bulk``), sending to the same server."""
    return start_worker("bulk", SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_server.port), SMTP_TIMEOUT="30")


def delivery(database: Any, key: str) -> dict[str, Any]:
    with database.connect() as db:
        row = db.execute(
            text("SELECT status, attempts, last_error FROM email_deliveries WHERE idempotency_key = :k"),
            {"k": key},
        ).one()
    return dict(row._mapping)


def parts(mail: Message) -> dict[str, str]:
    return {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in mail.walk()
        if not part.is_multipart()
    }


def test_every_template_arrives_once_with_its_parts(
    email_worker: WorkerProcess, bulk_worker: WorkerProcess, smtp: ScriptedHandler, database: Any
) -> None:
    # when a producer sends each of the six emails (the reminder in its own lane)
    results = [
        producer.enqueue_welcome_email("ada@example.com", "Ada"),
        producer.enqueue_booking_confirmation("ada@example.com", "Ada", **BOOKING, ends_at=END),
        producer.enqueue_booking_reminder("ada@example.com", "Ada", **BOOKING, ends_at=END),
        producer.enqueue_booking_cancellation("ada@example.com", "Ada", **BOOKING, reason="Studio flooded"),
        producer.enqueue_booking_expired("ada@example.com", "Ada", **BOOKING),
        producer.enqueue_password_reset("ada@example.com", "Ada", "https://magnetiq.example/r?t=1", 30),
    ]
    summaries = [r.get(timeout=30) for r in results]

    # then six distinct emails arrived, each text + HTML, subject per template
    mails = {m["Subject"].strip().split(":")[0].split(",")[0]: m for m in smtp.messages}
    assert len(smtp.messages) == 6
    assert set(mails) == {
        "Welcome to Magnetiq",
        "Booking confirmed",
        "Reminder",
        "Booking cancelled",
        "Booking expired unpaid",
        "Reset your Magnetiq password",
    }
    for mail in smtp.messages:
        assert {"text/plain", "text/html"} <= set(parts(mail))
    assert "Reason: Studio flooded" in parts(mails["Booking cancelled"])["text/plain"]
    # the confirmation carries the calendar request for the booking
    calendar = Calendar.from_ical(parts(mails["Booking confirmed"])["text/calendar"])
    (event,) = calendar.walk("VEVENT")
    assert calendar["METHOD"] == "REQUEST"
    assert str(event["UID"]) == "BK-42@magnetiq.mail"
    # and each result names its Message-ID, fixed by its key (the task id), and is recorded as sent
    for result, summary in zip(results, summaries, strict=True):
        assert summary.endswith(f" sent {message_id(result.id)}")
        assert delivery(database, result.id)["status"] == "sent"


def test_the_sent_mark_is_committed_with_the_result_row_or_alone_when_results_are_ignored(
    email_worker: WorkerProcess, smtp: ScriptedHandler, database: Any
) -> None:
    # given one welcome email with its result stored, one with results ignored
    stored = send_welcome_email.apply_async(args=("ada@example.com", "Ada"))
    ignored = send_welcome_email.apply_async(args=("bob@example.com", "Bob"), ignore_result=True)
    assert stored.get(timeout=30).startswith("Welcome email sent")
    wait_until(lambda: len(smtp.messages) == 2, 30, "both emails at the server")
    # then the first email's sent mark was written by its result row's transaction
    with database.connect() as db:
        xmins = db.execute(
            text(
                "SELECT d.xmin::text, r.xmin::text FROM email_deliveries d "
                "JOIN task_results r ON r.task_id = d.task_id WHERE d.idempotency_key = :k"
            ),
            {"k": stored.id},
        ).one()
    assert xmins[0] == xmins[1]
    assert delivery(database, stored.id)["status"] == "sent"
    # and the second is recorded sent on its own, with no result row
    wait_until(lambda: delivery(database, ignored.id)["status"] == "sent", 30, "the second recorded sent")
    with database.connect() as db:
        rows = db.execute(text("SELECT count(*) FROM task_results WHERE task_id = :id"), {"id": ignored.id})
        assert rows.scalar_one() == 0


def test_a_redelivered_task_does_not_send_twice(
    email_worker: WorkerProcess, smtp: ScriptedHandler, database: Any
) -> None:
    # given a welcome email that was sent
    first = send_welcome_email.apply_async(args=("ada@example.com", "Ada"), task_id="redelivered-1")
    assert first.get(timeout=30) == f"Welcome email sent {message_id('redelivered-1')}"

    # when the same message (same task id) is delivered to the worker again
    send_welcome_email.apply_async(args=("ada@example.com", "Ada"), task_id="redelivered-1")

    # then the worker ran it, found it sent, and sent nothing more
    wait_until(lambda: "already sent" in email_worker.log(), 30, "the redelivered task to run")
    assert len(smtp.messages) == 1
    assert delivery(database, "redelivered-1")["attempts"] == 1


@pytest.mark.parametrize("ignore_result", [False, True], ids=["mark-rides-on-result", "mark-alone"])
def test_a_refused_sent_mark_is_owed_by_a_rerun_that_sends_nothing(
    email_worker: WorkerProcess, smtp: ScriptedHandler, database: Any, broker: Connection, ignore_result: bool
) -> None:
    with refusing_sent_marks(database) as refusal:
        # given PostgreSQL refuses the ledger's sent mark
        # when an email is sent (its mark riding on its result row, or made alone)
        result = send_welcome_email.apply_async(args=("ada@example.com", "Ada"), ignore_result=ignore_result)

        # then the message is not acked away: the task runs again and is refused again...
        wait_until(lambda: refusal.refusals() >= 3, 60, "the sent mark to be refused three times")
        # ...while the email went out once and the key is still held
        assert len(smtp.messages) == 1
        assert delivery(database, result.id)["status"] == "sending"

        # when the refusal is lifted
        refusal.lift()

        # then the mark is committed, nothing more is sent, nothing is dead-lettered
        wait_until(lambda: delivery(database, result.id)["status"] == "sent", 60, "the sent mark")
    if not ignore_result:
        assert result.get(timeout=30) == f"Welcome email sent {message_id(result.id)}"
    assert (smtp.attempts, len(smtp.messages)) == (1, 1)
    assert queue_depth(broker, names.dlq(names.EMAIL))[0] == 0


def test_an_explicit_key_deduplicates_separate_publishes(
    email_worker: WorkerProcess, smtp: ScriptedHandler
) -> None:
    # when a producer publishes the same confirmation twice with its own key
    key = "booking-confirmation:42"
    one = producer.enqueue_booking_confirmation(
        "ada@example.com", "Ada", **BOOKING, ends_at=END, idempotency_key=key
    )
    two = producer.enqueue_booking_confirmation(
        "ada@example.com", "Ada", **BOOKING, ends_at=END, idempotency_key=key
    )

    # then both tasks succeed and one email carries the key's Message-ID
    summaries = sorted([one.get(timeout=30), two.get(timeout=30)])
    assert summaries == [
        f"Booking confirmation already sent {message_id(key)}",
        f"Booking confirmation sent {message_id(key)}",
    ]
    assert [m["Message-ID"] for m in smtp.messages] == [message_id(key)]


@pytest.mark.parametrize("replies", [["451"], ["421", "451"]], ids=["451", "421-then-451"])
def test_transient_replies_are_retried_and_sent_once(
    email_worker: WorkerProcess, smtp: ScriptedHandler, database: Any, replies: list[str]
) -> None:
    # given a server that defers the first attempts
    smtp.plan = list(replies)

    # when an email is sent
    result = producer.enqueue_password_reset("ada@example.com", "Ada", "https://magnetiq.example/r", 30)

    # then it is retried with backoff and arrives once
    assert result.get(timeout=60) == f"Password reset sent {message_id(result.id)}"
    assert smtp.attempts == len(replies) + 1
    assert len(smtp.messages) == 1
    row = delivery(database, result.id)
    assert (row["status"], row["attempts"]) == ("sent", len(replies) + 1)


def test_a_drop_after_data_is_retried_and_both_copies_share_one_message_id(
    email_worker: WorkerProcess, smtp: ScriptedHandler
) -> None:
    # given a server that takes the message, then drops the connection before replying
    smtp.plan = ["drop"]

    # when an email is sent
    result = producer.enqueue_welcome_email("ada@example.com", "Ada")
    result.get(timeout=60)

    # then the retry sent it again (the client could not know), and the receiver
    # can drop the copy: both carry the same deterministic Message-ID
    assert [m["Message-ID"] for m in smtp.messages] == [message_id(result.id)] * 2


def test_a_5xx_reply_fails_at_once_and_is_dead_lettered_with_the_reason(
    email_worker: WorkerProcess, smtp: ScriptedHandler, broker: Connection, database: Any
) -> None:
    # given a server that refuses the message for good
    smtp.plan = ["550"]

    # when an email is sent
    result = producer.enqueue_booking_expired("gone@example.com", "Gone", **BOOKING)

    # then it fails without retry, with the reply as the reason...
    with pytest.raises(SmtpPermanentError, match=r"SMTP 550: 5\.1\.1 Mailbox unavailable"):
        result.get(timeout=30)
    assert result.status == states.FAILURE
    assert smtp.attempts == 1
    # ...recorded in the ledger, and the message is in email.dlq
    row = delivery(database, result.id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "550" in row["last_error"]
    wait_until(lambda: queue_depth(broker, names.dlq(names.EMAIL))[0] == 1, 15, "email.dlq depth 1")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"to": "not-an-address"}, "to"),
        ({"resource": "Studio\r\nBcc: eve@example.com"}, "resource"),
        ({"name": "Ada\nBcc: eve@example.com"}, "name"),
        ({"booking_ref": "BK\r\n42"}, "booking_ref"),
    ],
)
def test_invalid_address_or_line_break_is_refused_before_smtp(
    email_worker: WorkerProcess,
    smtp: ScriptedHandler,
    broker: Connection,
    database: Any,
    kwargs: dict[str, str],
    field: str,
) -> None:
    arguments = {"to": "ada@example.com", "name": "Ada", **BOOKING, "ends_at": END, **kwargs}
    # given a producer refuses it at once
    with pytest.raises(InvalidTaskArguments, match=field):
        producer.enqueue_booking_confirmation(**arguments)
    # when a message bypassing the producer (published by name: nothing checks it) reaches the worker
    result = celery_app.send_task(SEND_BOOKING_CONFIRMATION, kwargs=arguments)

    # then it fails with a clear error, without retry, without touching SMTP or the ledger
    with pytest.raises(InvalidTaskArguments, match=f"{field}: "):
        result.get(timeout=30)
    wait_until(lambda: queue_depth(broker, names.dlq(names.EMAIL))[0] == 1, 15, "email.dlq depth 1")
    assert (smtp.connections, smtp.attempts) == (0, 0)
    with database.connect() as db:
        assert db.execute(text("SELECT count(*) FROM email_deliveries")).scalar_one() == 0


def test_hundred_sends_overlap_in_one_worker(email_worker: WorkerProcess, smtp: ScriptedHandler) -> None:
    # given a server that holds every message eight seconds (longer than the
    # worker needs to start 100 tasks, even on a busy machine)
    smtp.reset(delay=8.0)

    # when 100 emails are queued at once (one bulk publish)
    calls = [{"user_email": f"user{i}@example.com", "user_name": f"User {i}"} for i in range(100)]
    results = producer.enqueue_many(SEND_WELCOME_EMAIL, calls, model=WelcomeEmailArgs)

    # then all arrive, and the server held most of them at the same time: the
    # 100 greenlets really send concurrently through the one asyncio loop
    assert all(r.get(timeout=90).startswith("Welcome email sent") for r in results)
    assert len(smtp.messages) == 100
    assert smtp.peak_in_flight >= 50, smtp.peak_in_flight
    assert smtp.connections <= 100  # SMTP_MAX_CONNECTIONS
