"""Data sync: each resource's bookings as an iCalendar feed, and payments against a provider statement."""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from icalendar import Calendar, Event
from sqlalchemy import Engine, func, select, update

from app.schema import bookings, payments, resources, time_slots

log = logging.getLogger(__name__)

#: Columns of a provider statement (CSV): the provider's charge id, amount, currency, status.
STATEMENT_COLUMNS = ("reference", "amount_cents", "currency", "status")
#: Our payment status that each statement status corresponds to.
STATEMENT_STATUS = {"charged": "processed", "refunded": "refunded"}


class StatementInvalid(ValueError):
    """The statement file is missing or malformed: never retried."""


def resource_ids(engine: Engine) -> list[int]:
    """Every resource's id: one calendar feed each."""
    with engine.connect() as db:
        return list(db.execute(select(resources.c.id).order_by(resources.c.id)).scalars())


def export_calendar(engine: Engine, directory: Path, resource_id: int) -> bool:
    """Write ``resource-<id>.ics`` with the resource's confirmed bookings; the file is replaced atomically.

    Events carry the booking reference only (no personal data), keyed by a
    stable UID, so calendar clients update rather than duplicate them.

    Returns:
        False, writing nothing, when the resource no longer exists.
    """
    with engine.connect() as db:
        name = db.execute(select(resources.c.name).where(resources.c.id == resource_id)).scalar()
        rows = db.execute(
            select(bookings.c.reference, time_slots.c.starts_at, time_slots.c.ends_at)
            .join(time_slots, time_slots.c.id == bookings.c.slot_id)
            .where(bookings.c.status == "confirmed", time_slots.c.resource_id == resource_id)
            .order_by(time_slots.c.starts_at)
        ).all()
    if name is None:
        return False
    calendar = Calendar()
    calendar.add("prodid", "-//Magnetiq//bookings//EN")
    calendar.add("version", "2.0")
    calendar.add("x-wr-calname", name)
    stamp = datetime.now(UTC)
    for reference, starts_at, ends_at in rows:
        event = Event()
        event.add("uid", f"booking-{reference}@magnetiq")
        event.add("dtstamp", stamp)
        event.add("dtstart", starts_at.astimezone(UTC))
        event.add("dtend", ends_at.astimezone(UTC))
        event.add("summary", f"{name}: booked ({reference})")
        event.add("status", "CONFIRMED")
        calendar.add_component(event)
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomically(directory / f"resource-{resource_id}.ics", calendar.to_ical())
    return True


def prune_calendars(directory: Path, exported: Collection[int]) -> list[str]:
    """Delete the feeds of resources not in ``exported`` (deleted since); return their file names."""
    keep = {f"resource-{resource_id}.ics" for resource_id in exported}
    stale = sorted(p.name for p in directory.glob("resource-*.ics") if p.name not in keep)
    for name in stale:
        (directory / name).unlink(missing_ok=True)
    return stale


def export_calendars(engine: Engine, directory: Path) -> int:
    """Write every resource's feed and delete the feeds of resources that are gone, in this process.

    The fleet's ``export_booking_calendars`` does the same as a chord: one task
    per feed, then ``prune_calendars``.

    Returns:
        How many feeds were written.
    """
    exported = [rid for rid in resource_ids(engine) if export_calendar(engine, directory, rid)]
    prune_calendars(directory, exported)
    return len(exported)


def _write_atomically(path: Path, data: bytes) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


@dataclass
class Reconciliation:
    """The outcome of comparing a statement with the payments table (provider references)."""

    matched: int = 0
    #: In both, but amount, currency or status differ.
    mismatched: list[str] = field(default_factory=list)
    #: On the statement, unknown to us (money moved we did not record).
    unknown: list[str] = field(default_factory=list)
    #: Charged by us, absent from the statement.
    missing: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """A JSON-ready summary (task result)."""
        return {
            "matched": self.matched,
            "mismatched": self.mismatched,
            "unknown": self.unknown,
            "missing": self.missing,
        }


def _read_statement(path: Path) -> dict[str, tuple[int, str, str]]:
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if set(STATEMENT_COLUMNS) - set(reader.fieldnames or ()):
                raise StatementInvalid(
                    f"statement {path.name}: expected columns {', '.join(STATEMENT_COLUMNS)}"
                )
            return {
                row["reference"]: (
                    int(row["amount_cents"]),
                    row["currency"],
                    STATEMENT_STATUS.get(row["status"], "?"),
                )
                for row in reader
            }
    except (OSError, ValueError, TypeError) as exc:
        if isinstance(exc, StatementInvalid):
            raise
        raise StatementInvalid(f"statement {path.name}: {exc}") from None


def reconcile_payments(engine: Engine, statement: Path) -> Reconciliation:
    """Compare a provider statement with our charged payments; stamp the ones that agree.

    Raises:
        StatementInvalid: the file cannot be read as a statement.
    """
    lines = _read_statement(statement)
    result = Reconciliation()
    with engine.begin() as db:
        ours = db.execute(
            select(
                payments.c.id,
                payments.c.provider_reference,
                payments.c.amount_cents,
                payments.c.currency,
                payments.c.status,
            ).where(payments.c.provider_reference.is_not(None))
        ).all()
        agreed: list[int] = []
        for payment_id, reference, amount, currency, status in ours:
            line = lines.pop(reference, None)
            if line is None:
                result.missing.append(reference)
            elif line == (amount, currency, status):
                agreed.append(payment_id)
            else:
                result.mismatched.append(reference)
        if agreed:
            db.execute(update(payments).where(payments.c.id.in_(agreed)).values(reconciled_at=func.now()))
    result.matched = len(agreed)
    result.unknown = sorted(lines)
    log.info(
        "reconciled %s: %d matched, %d mismatched, %d unknown, %d missing",
        statement.name,
        result.matched,
        len(result.mismatched),
        len(result.unknown),
        len(result.missing),
    )
    return result
