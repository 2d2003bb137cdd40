"""The product's emails: what each one renders, from which data, with which attachments.

Each function returns an ``Outgoing`` the mail service sends (or the preview
command renders). ``SAMPLES`` holds sample data for every template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.mail.calendar import booking_invite


@dataclass(frozen=True)
class Attachment:
    """A file attached to an email."""

    filename: str
    content_type: str
    data: bytes
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outgoing:
    """One email to send: template, recipient, template data and its idempotency key."""

    template: str
    label: str
    to: str
    context: dict[str, Any]
    key: str
    task_id: str | None = None
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class Booking:
    """The booking an email is about; times are ISO-8601 strings with a UTC offset."""

    booking_ref: str
    resource: str
    starts_at: str
    ends_at: str | None = None

    def context(self, name: str) -> dict[str, Any]:
        """Template data: the user's name and the booking, with times formatted for people."""
        context: dict[str, Any] = {"name": name, "booking_ref": self.booking_ref, "resource": self.resource}
        context["starts_at"] = when(self.starts_at)
        if self.ends_at is not None:
            context["ends_at"] = when(self.ends_at)
        return context


def when(iso: str) -> str:
    """Format an ISO-8601 time with offset for people: ``Tue 01 Dec 2026, 10:00 (UTC+01:00)``."""
    moment = datetime.fromisoformat(iso)
    return f"{moment:%a %d %b %Y, %H:%M} ({moment:%Z})"


def welcome(to: str, user_name: str, key: str, task_id: str | None = None) -> Outgoing:
    """The welcome email of a new user."""
    return Outgoing("welcome", "Welcome email", to, {"user_name": user_name}, key, task_id)


def booking_confirmation(
    mail_from: str, to: str, name: str, booking: Booking, key: str, task_id: str | None = None
) -> Outgoing:
    """A booking confirmation with its calendar invitation (``invite.ics``, METHOD:REQUEST)."""
    if booking.ends_at is None:
        raise ValueError("a booking confirmation needs the booking's end")
    invite = booking_invite(
        booking_ref=booking.booking_ref,
        resource=booking.resource,
        starts_at=datetime.fromisoformat(booking.starts_at),
        ends_at=datetime.fromisoformat(booking.ends_at),
        organizer=mail_from,
        attendee=to,
        attendee_name=name,
    )
    ics = Attachment("invite.ics", "text/calendar", invite, {"method": "REQUEST"})
    context = booking.context(name)
    return Outgoing("booking_confirmation", "Booking confirmation", to, context, key, task_id, (ics,))


def booking_reminder(to: str, name: str, booking: Booking, key: str, task_id: str | None = None) -> Outgoing:
    """A reminder of an upcoming booking."""
    return Outgoing("booking_reminder", "Booking reminder", to, booking.context(name), key, task_id)


def booking_cancellation(
    to: str, name: str, booking: Booking, reason: str | None, key: str, task_id: str | None = None
) -> Outgoing:
    """The notice that a booking was cancelled, with the reason when there is one."""
    context = {**booking.context(name), "reason": reason}
    return Outgoing("booking_cancellation", "Booking cancellation", to, context, key, task_id)


def booking_expired(to: str, name: str, booking: Booking, key: str, task_id: str | None = None) -> Outgoing:
    """The notice that an unpaid pending booking expired."""
    return Outgoing("booking_expired", "Booking expiry notice", to, booking.context(name), key, task_id)


def password_reset(
    to: str, name: str, reset_url: str, expires_minutes: int, key: str, task_id: str | None = None
) -> Outgoing:
    """A password reset link valid for ``expires_minutes``."""
    context = {"name": name, "reset_url": reset_url, "expires_minutes": expires_minutes}
    return Outgoing("password_reset", "Password reset", to, context, key, task_id)


_TO, _NAME = "ada@example.com", "Ada Lovelace"
_BOOKING = Booking("BK-2026-0042", "Studio A", "2026-12-01T10:00:00+01:00", "2026-12-01T11:30:00+01:00")

#: Sample data for every template (``magnetiq mail preview``), given the sender address.
SAMPLES: dict[str, Callable[[str], Outgoing]] = {
    "welcome": lambda _: welcome(_TO, _NAME, "preview-welcome"),
    "booking_confirmation": lambda sender: booking_confirmation(
        sender, _TO, _NAME, _BOOKING, "preview-booking-confirmation"
    ),
    "booking_reminder": lambda _: booking_reminder(_TO, _NAME, _BOOKING, "preview-booking-reminder"),
    "booking_cancellation": lambda _: booking_cancellation(
        _TO, _NAME, _BOOKING, "The studio is closed for maintenance.", "preview-booking-cancellation"
    ),
    "booking_expired": lambda _: booking_expired(_TO, _NAME, _BOOKING, "preview-booking-expired"),
    "password_reset": lambda _: password_reset(
        _TO, _NAME, "https://magnetiq.example/reset?token=sample", 30, "preview-password-reset"
    ),
}
