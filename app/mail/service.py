"""The mail service: render a template, build a safe MIME message, send it once through a sender."""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
from email.header import Header
from email.message import EmailMessage
from email.utils import formataddr, parseaddr
from typing import Protocol

from app.mail import emails
from app.mail.emails import Attachment, Outgoing
from app.mail.errors import DeliveryBusy
from app.mail.ledger import DeliveryLedger
from app.mail.mime import POLICY
from app.mail.render import Renderer
from app.mail.smtp import EmailSender, SmtpPermanentError, SmtpTransientError

log = logging.getLogger(__name__)


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


def _mailbox(value: str, what: str, *, bare: bool = False) -> str:
    """``value`` as an ASCII mailbox: an IDNA domain, an RFC 2047 display name.

    Raises:
        InvalidEmail: not one address (or, with ``bare``, not only an address),
            or a local part that is not ASCII (that needs SMTPUTF8).
    """
    name, address = parseaddr(value)
    local, _, domain = address.rpartition("@")
    if not local or not domain or (bare and address != value):
        raise InvalidEmail(f"{what} is not a single email address")
    if not local.isascii():
        raise InvalidEmail(f"{what} has a non-ASCII local part (SMTPUTF8 is not supported)")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidEmail(f"{what} has an invalid domain") from None
    return formataddr((name, f"{local}@{domain}"), charset="utf-8")


@functools.lru_cache(maxsize=16)
def _sender_mailbox(mail_from: str) -> str:
    # The sender is configuration: the same string on every message.
    return _mailbox(mail_from, "sender")


def _boundary() -> str:
    """A MIME boundary no body can contain: 120 random bits (short enough to fit one header line).

    Without one, the generator draws a guessable number and compiles a new
    regular expression to search every part for it, on each message.
    """
    return f"=_{secrets.token_urlsafe(15)}"


def build_message(
    mail_from: str,
    to: str,
    subject: str,
    text: str,
    html: str,
    key: str,
    attachments: tuple[Attachment, ...] = (),
) -> EmailMessage:
    """Build a multipart/alternative message (text first, then HTML), inside multipart/mixed with attachments.

    Raises:
        InvalidEmail: a header value has CR/LF/NUL, the recipient is not one address,
            or an address has a non-ASCII local part.
    """
    message = EmailMessage(policy=POLICY)
    message["From"] = _sender_mailbox(_header(mail_from, "sender"))
    message["To"] = _mailbox(_header(to, "recipient"), "recipient", bare=True)
    subject = _header(subject, "subject")
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8", header_name="Subject")
    message["Message-ID"] = message_id(key)
    message.set_content(text)
    message.make_alternative(boundary=_boundary())
    message.add_alternative(html, subtype="html")
    if attachments:
        message.make_mixed(boundary=_boundary())
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(
            attachment.data,
            maintype=maintype,
            subtype=subtype,
            filename=attachment.filename,
            params=attachment.params,
        )
    return message


def compose(renderer: Renderer, mail_from: str, outgoing: Outgoing) -> EmailMessage:
    """Render ``outgoing``'s template and build its message.

    Raises:
        InvalidEmail: the recipient or a header value is unsafe.
    """
    rendered = renderer.render(outgoing.template, **outgoing.context)
    return build_message(
        mail_from,
        outgoing.to,
        rendered.subject,
        rendered.text,
        rendered.html,
        outgoing.key,
        outgoing.attachments,
    )


class Throttle(Protocol):
    """A rate limit shared beyond this process (``app.mail.throttle.FleetThrottle``)."""

    def wait(self, domain: str) -> float:
        """Return once an email to ``domain`` may start; the seconds waited."""
        ...


class MailService:
    """Renders and sends the product's emails, each at most once per idempotency key."""

    def __init__(
        self,
        sender: EmailSender,
        renderer: Renderer,
        mail_from: str,
        ledger: DeliveryLedger | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        """Send through ``sender``; with a ``ledger``, a key already sent is never sent again.

        A ``throttle`` (the fleet-wide rate limit) is waited for before the key
        is claimed, so no claim is held while waiting.
        """
        self._sender = sender
        self._renderer = renderer
        self._mail_from = mail_from
        self._ledger = ledger
        self._throttle = throttle

    def compose(self, outgoing: Outgoing) -> EmailMessage:
        """Render and build the message of ``outgoing`` without sending it."""
        return compose(self._renderer, self._mail_from, outgoing)

    def send(self, outgoing: Outgoing) -> str:
        """Send ``outgoing`` unless its key was sent before.

        Returns:
            A short summary without personal data: ``<label> sent <message-id>``
            or ``<label> already sent <message-id>``.

        Raises:
            InvalidEmail: refused before SMTP (never retried).
            SmtpTransientError: a later attempt may succeed.
            SmtpPermanentError: the server refused it, now or in an earlier attempt.
            DeliveryBusy: another attempt holds the key.
        """
        message = self.compose(outgoing)
        mid = str(message["Message-ID"])
        if self._throttle is not None:
            self._throttle.wait(parseaddr(str(message["To"]))[1].rpartition("@")[2])
        attempt: int | None = None
        if self._ledger is not None:
            claim = self._ledger.claim(outgoing.key, outgoing.template, mid, outgoing.task_id)
            if claim.state == "sent":
                return f"{outgoing.label} already sent {mid}"
            if claim.state == "refused":
                raise SmtpPermanentError(f"refused by the server earlier: {claim.reason}")
            if claim.state == "busy":
                retry_in = claim.retry_in or 1.0
                raise DeliveryBusy(f"{outgoing.label} {mid} is being sent by another attempt", retry_in)
            attempt = claim.attempt
        self._deliver(outgoing.key, message, outgoing.task_id, attempt)
        return f"{outgoing.label} sent {mid}"

    def _deliver(self, key: str, message: EmailMessage, task_id: str | None, attempt: int | None) -> None:
        try:
            self._sender.send(message)
        except (SmtpTransientError, SmtpPermanentError) as exc:
            if self._ledger is not None:
                permanent = isinstance(exc, SmtpPermanentError)
                self._ledger.record_failure(key, str(exc), permanent=permanent, attempt=attempt)
            raise
        except BaseException:
            if self._ledger is not None:
                self._ledger.record_failure(key, "interrupted", permanent=False, attempt=attempt)
            raise
        if self._ledger is not None:
            self._ledger.record_sent(key, task_id)

    def send_welcome(self, user_email: str, user_name: str, key: str, task_id: str | None = None) -> str:
        """Send the welcome email; ``key`` fixes its Message-ID and de-duplicates it."""
        return self.send(emails.welcome(user_email, user_name, key, task_id))

    def send_booking_confirmation(
        self, to: str, name: str, booking: emails.Booking, key: str, task_id: str | None = None
    ) -> str:
        """Send the booking confirmation with its calendar invitation."""
        return self.send(emails.booking_confirmation(self._mail_from, to, name, booking, key, task_id))
