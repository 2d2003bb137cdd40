"""The mail service: render a template, build a safe MIME message, hand it to a sender."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.utils import parseaddr

from app.mail.render import Renderer
from app.mail.smtp import EmailSender


class InvalidEmail(ValueError):
    """An address or header value that must never reach SMTP."""


def message_id(key: str, domain: str = "magnetiq.mail") -> str:
    """Return a Message-ID derived from ``key``, so every resend carries the same one."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


def _header(value: str, what: str) -> str:
    # splitlines() knows every line boundary (CR, LF, VT, FF, NEL, U+2028, ...).
    if "\x00" in value or (value and value.splitlines() != [value]):
        raise InvalidEmail(f"{what} contains a line break or NUL")
    return value


def build_message(mail_from: str, to: str, subject: str, text: str, html: str, key: str) -> EmailMessage:
    """Build a multipart/alternative message (text first, then HTML).

    Raises:
        InvalidEmail: a header value has CR/LF/NUL or the recipient is not one address.
    """
    _, address = parseaddr(_header(to, "recipient"))
    local, _, domain = address.rpartition("@")
    if not local or not domain or address != to:
        raise InvalidEmail("recipient is not a single email address")
    message = EmailMessage()
    message["From"] = _header(mail_from, "sender")
    message["To"] = address
    message["Subject"] = _header(subject, "subject")
    message["Message-ID"] = message_id(key)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


class MailService:
    """Renders and sends the product's emails."""

    def __init__(self, sender: EmailSender, renderer: Renderer, mail_from: str) -> None:
        self._sender = sender
        self._renderer = renderer
        self._mail_from = mail_from

    def send_welcome(self, user_email: str, user_name: str, key: str) -> str:
        """Send the welcome email; ``key`` (the task id) fixes its Message-ID.

        Returns:
            A short summary without personal data.
        """
        rendered = self._renderer.render("welcome", user_name=user_name)
        message = build_message(
            self._mail_from, user_email, rendered.subject, rendered.text, rendered.html, key
        )
        self._sender.send(message)
        return f"Welcome email sent {message['Message-ID']}"
