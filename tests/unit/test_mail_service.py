"""Unit tests of app.mail.service: safe MIME messages and the welcome use case."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

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
