"""Unit tests of the task adapters: FleetTask validates arguments before any body runs.

Tasks are called directly, in-process (no broker, no eager mode).
"""

from __future__ import annotations

import logging
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import Engine

from app.contracts import InvalidTaskArguments
from app.mail.render import Renderer
from app.mail.service import MailService, message_id
from app.tasks import email_tasks, resources
from app.tasks.booking_tasks import process_payment
from app.tasks.email_tasks import (
    send_booking_cancellation,
    send_booking_confirmation,
    send_booking_expired,
    send_booking_reminder,
    send_password_reset,
    send_welcome_email,
)
from app.tasks.maintenance import cleanup_old_sessions

#: A value no message should ever echo: it stands for personal data.
DISTINCTIVE = "Zq7-personal-data-9Xw"


class RecordingSender:
    """An in-memory EmailSender: keeps every message it is given."""

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    def send(self, message: EmailMessage) -> None:
        self.sent.append(message)


def _no_database() -> Engine:
    raise AssertionError("the task touched the database")


def _no_mail_service() -> MailService:
    raise AssertionError("the task reached the mail service")


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any use of the database or SMTP fail the test."""
    monkeypatch.setattr(resources, "engine", _no_database)
    monkeypatch.setattr(resources, "mail_service", _no_mail_service)


@pytest.fixture
def sender(monkeypatch: pytest.MonkeyPatch) -> RecordingSender:
    """Wire the email tasks to a mail service with an in-memory sender."""
    recording = RecordingSender()
    service = MailService(recording, Renderer(), "Magnetiq <no-reply@magnetiq.local>")
    monkeypatch.setattr(resources, "mail_service", lambda: service)
    return recording


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("abc",), {}),
        (("12",), {}),
        ((True,), {}),
        ((0,), {}),
        ((-5,), {}),
        ((), {"payment_id": 1.5}),
    ],
)
def test_process_payment_rejects_bad_values_before_the_database(
    guarded: None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    # given the database is off limits
    # when the task is called with a bad payment id
    # then it fails with InvalidTaskArguments, naming the task and field
    with pytest.raises(InvalidTaskArguments, match=r"process_payment: invalid arguments: payment_id"):
        process_payment(*args, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        ((1, 2), {}),
        ((1,), {"payment_id": 1}),
        ((), {"payment": 1}),
    ],
)
def test_process_payment_rejects_wrong_arity(
    guarded: None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    # given the database is off limits
    # when the task is called with the wrong number or names of arguments
    # then it fails with InvalidTaskArguments before any work
    with pytest.raises(InvalidTaskArguments, match="process_payment: invalid arguments"):
        process_payment(*args, **kwargs)


@pytest.mark.parametrize(("args", "kwargs"), [((1,), {}), ((), {"older_than": 3})])
def test_cleanup_takes_no_arguments(guarded: None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # given the database is off limits
    # when the cleanup task gets arguments
    # then it fails with InvalidTaskArguments
    with pytest.raises(InvalidTaskArguments, match="cleanup_old_sessions: invalid arguments"):
        cleanup_old_sessions(*args, **kwargs)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((f"{DISTINCTIVE}@example.com\r\nBcc: x@evil.example", "Ada"), "user_email"),
        ((f"not-an-email-{DISTINCTIVE}", "Ada"), "user_email"),
        (("ada@example.com", f"Ada\r\n{DISTINCTIVE}"), "user_name"),
        (("ada@example.com", 42), "user_name"),
    ],
)
def test_send_welcome_email_rejects_bad_arguments_before_smtp(
    guarded: None, args: tuple[Any, ...], field: str
) -> None:
    # given SMTP is off limits
    # when the task is called with a bad address or name
    with pytest.raises(InvalidTaskArguments) as caught:
        send_welcome_email(*args)

    # then the error names the field but not the value
    assert field in str(caught.value)
    assert DISTINCTIVE not in str(caught.value)


def test_send_welcome_email_sends_through_the_mail_service(sender: RecordingSender) -> None:
    # given a mail service with an in-memory sender
    # when the task is called directly
    result = send_welcome_email("a@example.com", "Ada")

    # then one welcome email went to the address and the result has no personal data
    assert len(sender.sent) == 1
    assert sender.sent[0]["To"] == "a@example.com"
    assert sender.sent[0]["Subject"] == "Welcome to Magnetiq, Ada!"
    assert result.startswith("Welcome email sent <")
    assert "a@example.com" not in result


def test_send_welcome_email_accepts_keyword_arguments(sender: RecordingSender) -> None:
    # given a mail service with an in-memory sender
    # when the task is called with keywords, as producers publish it
    send_welcome_email(user_email="b@example.com", user_name="Bo")

    # then the message is addressed from the keywords
    assert [message["To"] for message in sender.sent] == ["b@example.com"]


def test_on_failure_logs_identity_but_not_arguments(caplog: pytest.LogCaptureFixture) -> None:
    # given a failure of a task called with personal data
    error = InvalidTaskArguments("app.tasks.email_tasks.send_welcome_email: invalid arguments: user_email")

    # when the failure hook runs
    with caplog.at_level(logging.ERROR, logger="app.tasks.base"):
        send_welcome_email.on_failure(error, "task-id-1", (f"{DISTINCTIVE}@example.com",), {}, None)

    # then the log names the task and id but not the arguments
    assert "send_welcome_email" in caplog.text
    assert "task-id-1" in caplog.text
    assert DISTINCTIVE not in caplog.text
    (record,) = caplog.records
    assert record.__dict__["task_id"] == "task-id-1"


BOOKING = {
    "to": "ada@example.com",
    "name": "Ada",
    "booking_ref": "BK-9",
    "resource": "Studio A",
    "starts_at": "2026-12-01T10:00:00+01:00",
}


@pytest.mark.parametrize(
    ("task", "kwargs", "summary"),
    [
        (
            send_booking_confirmation,
            {**BOOKING, "ends_at": "2026-12-01T11:00:00+01:00"},
            "Booking confirmation",
        ),
        (send_booking_reminder, {**BOOKING, "ends_at": "2026-12-01T11:00:00+01:00"}, "Booking reminder"),
        (send_booking_cancellation, {**BOOKING, "reason": "Closed"}, "Booking cancellation"),
        (send_booking_expired, BOOKING, "Booking expiry notice"),
        (
            send_password_reset,
            {
                "to": "ada@example.com",
                "name": "Ada",
                "reset_url": "https://m.example/r",
                "expires_minutes": 30,
            },
            "Password reset",
        ),
    ],
)
def test_each_email_task_sends_one_message_keyed_by_the_producer(
    sender: RecordingSender, task: Any, kwargs: dict[str, Any], summary: str
) -> None:
    # when the task runs with a producer's idempotency key
    result = task(**kwargs, idempotency_key="producer-key-1")

    # then one message went out whose Message-ID comes from that key
    (message,) = sender.sent
    assert message["To"] == "ada@example.com"
    assert message["Message-ID"] == message_id("producer-key-1")
    assert result == f"{summary} sent {message_id('producer-key-1')}"


@pytest.mark.parametrize(
    ("task", "kwargs", "field"),
    [
        (send_booking_confirmation, {**BOOKING, "ends_at": "2026-12-01T09:00:00+01:00"}, "ends_at"),
        (send_booking_reminder, {**BOOKING, "ends_at": "2026-12-01T11:00:00"}, "ends_at"),
        (send_booking_cancellation, {**BOOKING, "reason": "a\r\nBcc: x@evil.example"}, "reason"),
        (send_booking_expired, {**BOOKING, "booking_ref": "BK 9"}, "booking_ref"),
        (
            send_password_reset,
            {
                "to": "ada@example.com",
                "name": "Ada",
                "reset_url": "javascript:alert(1)",
                "expires_minutes": 30,
            },
            "reset_url",
        ),
        (
            send_welcome_email,
            {"user_email": "a@example.com", "user_name": "A", "idempotency_key": "a b"},
            "key",
        ),
    ],
)
def test_email_tasks_refuse_bad_arguments_before_any_mail(
    guarded: None, task: Any, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidTaskArguments, match=field):
        task(**kwargs)


@pytest.mark.parametrize(
    ("headers", "retries", "waits"),
    [
        (None, 3, 0),
        ({"email_busy_waits": 2}, 3, 2),
        ({"email_busy_waits": "2"}, 3, 2),
        ({"email_busy_waits": 9}, 3, 3),  # never more than the retries made
        ({"email_busy_waits": -4}, 3, 0),
        ({"email_busy_waits": "many"}, 3, 0),  # malformed: no extra failure budget
        ({"email_busy_waits": None}, 3, 0),
    ],
)
def test_busy_waits_are_read_from_the_header_and_bounded_by_the_retries(
    headers: dict[str, Any] | None, retries: int, waits: int
) -> None:
    assert email_tasks.busy_waits(headers, retries) == waits


def test_busy_waits_outlast_two_leases_and_no_more() -> None:
    # a look every BUSY_RECHECK seconds over two whole leases, then the email gives up
    limit = email_tasks.busy_wait_limit(90.0)
    assert limit * email_tasks.BUSY_RECHECK >= 2 * 90.0
    assert limit * email_tasks.BUSY_RECHECK <= 2 * 90.0 + 4 * email_tasks.BUSY_RECHECK
