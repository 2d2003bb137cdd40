"""Unit tests of app.mail.service: safe MIME messages and rendered notices (sent-once: integration)."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest
from icalendar import Calendar

from app.mail import emails
from app.mail.emails import Booking
from app.mail.mime import to_bytes
from app.mail.preview import write_preview
from app.mail.render import Renderer
from app.mail.service import InvalidEmail, MailService, build_message, message_id

SENDER = "Magnetiq <no-reply@magnetiq.local>"


class RecordingSender:
    """An in-memory EmailSender: keeps every message it is given."""

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    def send(self, message: EmailMessage) -> None:
        self.sent.append(message)


def _build(**overrides: str) -> EmailMessage:
    fields = {
        "mail_from": SENDER,
        "to": "ada@example.com",
        "subject": "Welcome",
        "text": "Hello Ada",
        "html": "<p>Hello Ada</p>",
        "key": "task-1",
    }
    fields.update(overrides)
    return build_message(**fields)


def test_build_message_is_multipart_alternative_text_then_html() -> None:
    # given the parts of an email
    # when the message is built
    message = _build()

    # then it is multipart/alternative with text first, then HTML
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().strip() == "Hello Ada"
    assert parts[1].get_content().strip() == "<p>Hello Ada</p>"
    assert message["From"] == SENDER
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Welcome"


def test_message_id_is_deterministic_per_key() -> None:
    # given two builds with one key and one with another
    first = _build(key="task-1")
    again = _build(key="task-1", subject="Different subject")
    other = _build(key="task-2")

    # when their Message-IDs are compared
    # then the key alone decides them
    assert first["Message-ID"] == again["Message-ID"] == message_id("task-1")
    assert other["Message-ID"] != first["Message-ID"]
    assert first["Message-ID"].startswith("<")
    assert first["Message-ID"].endswith("@magnetiq.mail>")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("to", "ada@example.com\r\nBcc: evil@example.com"),
        ("to", "ada@example.com\nBcc: evil@example.com"),
        ("to", "ada@example.com\x00"),
        ("subject", "Welcome\r\nBcc: evil@example.com"),
        ("subject", "Welcome\nBcc: evil@example.com"),
        ("subject", "Welcome\rX"),
        ("mail_from", "Magnetiq <no-reply@magnetiq.local>\r\nBcc: evil@example.com"),
        ("mail_from", "Magnetiq <no-reply@magnetiq.local>\n"),
        ("subject", "Welcome\x85"),
        ("subject", "Welcome\u2028Bcc: evil@example.com"),
        ("subject", "Welcome\x0b"),
    ],
)
def test_line_breaks_in_headers_raise_invalid_email(field: str, value: str) -> None:
    # given a header value that would inject another header
    # when the message is built
    # then it is refused
    with pytest.raises(InvalidEmail, match="line break"):
        _build(**{field: value})


@pytest.mark.parametrize(
    "to",
    [
        "ada@example.com, eve@example.com",
        "ada@example.com;eve@example.com",
        "ada@example.com eve@example.com",
        "Ada <ada@example.com>",
        "<ada@example.com>",
        "ada@example.com (Ada)",
        "ada",
        "",
        "ada@b@example.com",
    ],
)
def test_recipient_must_be_one_plain_address(to: str) -> None:
    # given a recipient that is not exactly one address
    # when the message is built
    # then it is refused
    with pytest.raises(InvalidEmail, match="not a single email address"):
        _build(to=to)


@pytest.mark.parametrize("subject", ["Willkommen, Zoë — 漢字 " + "long " * 60, "Welcome " + "long " * 60])
def test_wire_bytes_encode_non_ascii_headers_and_parse_back(subject: str) -> None:
    # given a sender name and a recipient domain that are not ASCII, and a long subject
    message = _build(
        mail_from="Magnetiq Büro <no-reply@magnetiq.local>",
        to="ada@bücher.example",
        subject=subject,
        text="Grüße, Zoë",
    )

    # when it is written for SMTP
    wire = to_bytes(message)

    # then it is 7-bit with CRLF line ends, no line near the 998 limit, and reads back unchanged
    assert wire.isascii()
    assert b"\n" not in wire.replace(b"\r\n", b"")
    assert max(len(line) for line in wire.split(b"\r\n")) <= 78
    back = message_from_bytes(wire, policy=default)
    assert back["Subject"] == subject
    assert back["From"].addresses[0].display_name == "Magnetiq Büro"
    assert back["From"].addresses[0].addr_spec == "no-reply@magnetiq.local"
    assert back["To"] == "ada@xn--bcher-kva.example"
    assert back["Message-ID"] == message_id("task-1")
    assert back.get_body(("plain",)).get_content().strip() == "Grüße, Zoë"


def test_non_ascii_local_part_is_refused_before_smtp() -> None:
    # given a recipient whose local part needs SMTPUTF8
    # when the message is built
    # then it is refused with the reason
    with pytest.raises(InvalidEmail, match="non-ASCII local part"):
        _build(to="zoë@example.com")


def test_send_welcome_hands_one_message_to_the_sender() -> None:
    # given a mail service with an in-memory sender
    sender = RecordingSender()
    service = MailService(sender, Renderer(), SENDER)

    # when the welcome email is sent
    summary = service.send_welcome("ada@example.com", "Ada", key="task-7")

    # then exactly one message went to the right address
    assert len(sender.sent) == 1
    message = sender.sent[0]
    assert message["To"] == "ada@example.com"
    assert message["From"] == SENDER
    assert message["Subject"] == "Welcome to Magnetiq, Ada!"
    assert message["Message-ID"] == message_id("task-7")
    assert "Hello Ada," in message.get_body(("plain",)).get_content()
    # and the summary carries no personal data
    assert message_id("task-7") in summary
    assert "ada@example.com" not in summary
    assert "Ada" not in summary


def test_send_welcome_refuses_a_bad_recipient_before_sending() -> None:
    # given a mail service with an in-memory sender
    sender = RecordingSender()
    service = MailService(sender, Renderer(), SENDER)

    # when the recipient smuggles a second header
    with pytest.raises(InvalidEmail):
        service.send_welcome("ada@example.com\r\nBcc: eve@example.com", "Ada", key="task-8")

    # then nothing was sent
    assert sender.sent == []


URL = "https://magnetiq.example/reset?token=abc"
BOOKING = Booking("BK-7", "Studio A", "2026-12-01T10:00:00+01:00", "2026-12-01T11:30:00+01:00")


def test_booking_confirmation_carries_a_calendar_request() -> None:
    # given a mail service
    sender = RecordingSender()
    service = MailService(sender, Renderer(), SENDER)

    # when a booking is confirmed
    service.send_booking_confirmation("ada@example.com", "Ada", BOOKING, key="booking-confirmation:7")

    # then the message has text, HTML and an invite.ics REQUEST for the booking's UID
    (message,) = sender.sent
    assert message.get_content_type() == "multipart/mixed"
    assert "Studio A" in message["Subject"]
    (ics,) = list(message.iter_attachments())
    assert ics.get_content_type() == "text/calendar"
    assert ics.get_filename() == "invite.ics"
    assert ics.get_param("method") == "REQUEST"
    calendar = Calendar.from_ical(ics.get_payload(decode=True))
    assert calendar["METHOD"] == "REQUEST"
    (event,) = calendar.walk("VEVENT")
    assert str(event["UID"]) == "BK-7@magnetiq.mail"
    assert event.decoded("DTSTART") == datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert event.decoded("DTEND") == datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    assert str(event["ATTENDEE"]) == "mailto:ada@example.com"
    assert "Tue 01 Dec 2026, 10:00 (UTC+01:00)" in message.get_body(("plain",)).get_content()


@pytest.mark.parametrize(
    ("outgoing", "subject"),
    [
        (emails.booking_reminder("ada@example.com", "Ada", BOOKING, "k"), "Reminder: Studio A"),
        (emails.booking_cancellation("ada@example.com", "Ada", BOOKING, "Closed", "k"), "Booking cancelled"),
        (emails.booking_expired("ada@example.com", "Ada", BOOKING, "k"), "Booking expired unpaid"),
        (emails.password_reset("ada@example.com", "Ada", URL, 30, "k"), "Reset your Magnetiq password"),
    ],
)
def test_each_notice_is_one_multipart_message(outgoing: emails.Outgoing, subject: str) -> None:
    # given a notice
    sender = RecordingSender()
    service = MailService(sender, Renderer(), SENDER)

    # when it is sent
    summary = service.send(outgoing)

    # then one text+HTML message with its subject went out, and the summary names no one
    (message,) = sender.sent
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"].startswith(subject)
    assert "Hello Ada," in message.get_body(("plain",)).get_content()
    assert summary == f"{outgoing.label} sent {message_id('k')}"


def test_cancellation_reason_and_reset_link_are_in_both_parts() -> None:
    sender = RecordingSender()
    service = MailService(sender, Renderer(), SENDER)
    service.send(emails.booking_cancellation("ada@example.com", "Ada", BOOKING, "Studio flooded", "c"))
    service.send(emails.password_reset("ada@example.com", "Ada", URL + "&x=1", 45, "r"))
    cancel, reset = sender.sent
    assert "Reason: Studio flooded" in cancel.get_body(("plain",)).get_content()
    assert "Reason: Studio flooded" in cancel.get_body(("html",)).get_content()
    assert f"{URL}&x=1" in reset.get_body(("plain",)).get_content()
    assert f'href="{URL}&amp;x=1"' in reset.get_body(("html",)).get_content()
    assert "45 minutes" in reset.get_body(("plain",)).get_content()


def test_preview_writes_every_template(tmp_path: Path) -> None:
    # when every template is previewed
    for template in emails.SAMPLES:
        written = write_preview(template, tmp_path, SENDER)
        # then its message, HTML and text are files
        assert [p.name for p in written] == [f"{template}.eml", f"{template}.html", f"{template}.txt"]
    eml = message_from_bytes((tmp_path / "booking_confirmation.eml").read_bytes(), policy=default)
    assert [a.get_content_type() for a in eml.iter_attachments()] == ["text/calendar"]  # type: ignore[attr-defined]
    assert "Ada Lovelace" in (tmp_path / "password_reset.html").read_text()
