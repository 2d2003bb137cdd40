"""Calendar invitations (iCalendar, RFC 5545) attached to booking emails."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parseaddr

from icalendar import Calendar, Event, vCalAddress, vText

#: Domain of every event UID, so a booking's UID is stable across resends and updates.
UID_DOMAIN = "magnetiq.mail"


def booking_invite(
    *,
    booking_ref: str,
    resource: str,
    starts_at: datetime,
    ends_at: datetime,
    organizer: str,
    attendee: str,
    attendee_name: str,
) -> bytes:
    """Return a ``METHOD:REQUEST`` calendar with one event for the booking.

    The UID is derived from ``booking_ref`` alone, so calendars treat a resent
    or updated invitation as the same event.
    """
    calendar = Calendar()
    calendar.add("prodid", "-//Magnetiq//Bookings//EN")
    calendar.add("version", "2.0")
    calendar.add("method", "REQUEST")
    event = Event()
    event.add("uid", f"{booking_ref}@{UID_DOMAIN}")
    event.add("dtstamp", datetime.now(UTC))
    event.add("dtstart", starts_at.astimezone(UTC))
    event.add("dtend", ends_at.astimezone(UTC))
    event.add("summary", f"{resource} ({booking_ref})")
    event.add("sequence", 0)
    event.add("status", "CONFIRMED")
    event.add("organizer", vCalAddress(f"mailto:{parseaddr(organizer)[1]}"))
    guest = vCalAddress(f"mailto:{attendee}")
    guest.params["cn"] = vText(attendee_name)
    guest.params["role"] = vText("REQ-PARTICIPANT")
    guest.params["partstat"] = vText("ACCEPTED")
    event.add("attendee", guest, encode=False)
    calendar.add_component(event)
    return bytes(calendar.to_ical())
