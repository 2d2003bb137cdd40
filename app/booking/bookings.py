"""Booking use cases on PostgreSQL: place (reserve, charge, confirm), cancel (refund), expire.

Every use case locks the booking row first and the slot row second, so
duplicate deliveries of one task run one after the other and two bookings of
one slot are decided one at a time; the partial unique index
``uq_bookings_confirmed_slot`` refuses a second confirmation whatever Python
does. Emails are queued while the booking row is still locked and marked
queued in the same transaction: a duplicate delivery finds the mark and queues
nothing. A crash between the publish and the commit queues the email once
more with the same idempotency key, which the email worker deduplicates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text, update

from app.booking.notices import Kind, Notifier, load_notice, notice_from_row, notice_query
from app.booking.provider import PaymentDeclined, PaymentProvider
from app.schema import bookings, payments, time_slots, users

log = logging.getLogger(__name__)

ALREADY_PROCESSED = "Already processed"
#: A lock another transaction holds this long is a transient error (retried), not a hang.
LOCK_TIMEOUT = "3s"
#: The column that records that a kind of email was queued for a booking.
QUEUED_COLUMN = {
    "confirmation": bookings.c.confirmation_queued_at,
    "reminder": bookings.c.reminder_queued_at,
    "cancellation": bookings.c.cancellation_queued_at,
}


class BookingNotFound(LookupError):
    """No booking has the given id: the task can never succeed."""


class UnknownReference(LookupError):
    """The booking names a user or slot that does not exist: never retried."""


class ReferenceConflict(ValueError):
    """A booking reference was reused for a different user or slot: never retried."""


@dataclass(frozen=True)
class BookingRequest:
    """One booking as the producer asks for it; ``reference`` is its idempotency key."""

    reference: str
    user_id: int
    slot_id: int
    amount_cents: int
    currency: str

    @property
    def payment_key(self) -> str:
        """The idempotency key of the booking's payment (and of its charge at the provider)."""
        return f"booking:{self.reference}"


def begin_locked(connection: Connection) -> None:
    """Bound lock waits in the current transaction (a lock timeout raises OperationalError)."""
    connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))


def place_booking(
    engine: Engine, provider: PaymentProvider, notifier: Notifier, request: BookingRequest
) -> str:
    """Create, reserve, charge and confirm a booking once, then queue its confirmation email.

    A duplicate request (same reference) finds the booking and queues nothing
    new. A booking whose slot is taken, or whose charge is declined, ends
    ``cancelled`` and gets a cancellation email instead.

    Returns:
        ``"Booking <ref> confirmed"``, ``"Booking <ref> cancelled: <reason>"``,
        or ``"Already processed"`` for a duplicate.

    Raises:
        UnknownReference: the user or slot does not exist.
        ReferenceConflict: the reference belongs to another user or slot.
    """
    booking_id = _create(engine, request)
    with engine.begin() as db:
        begin_locked(db)
        row = db.execute(select(bookings).where(bookings.c.id == booking_id).with_for_update()).one()
        outcome = ALREADY_PROCESSED
        if row.status == "pending":
            outcome = _reserve_and_charge(db, provider, row, request)
        if row.status == "pending" or row.confirmation_queued_at is None:
            _notify_once(db, notifier, booking_id)
    log.info("booking %s: %s", request.reference, outcome, extra={"idempotency_key": request.reference})
    return outcome


def _create(engine: Engine, request: BookingRequest) -> int:
    with engine.begin() as db:
        begin_locked(db)
        known = db.execute(
            select(
                select(users.c.id).where(users.c.id == request.user_id).exists(),
                select(time_slots.c.id).where(time_slots.c.id == request.slot_id).exists(),
            )
        ).one()
        if not all(known):
            raise UnknownReference(f"booking {request.reference}: unknown user or slot")
        # A concurrent duplicate waits here for the first insert to commit, then inserts nothing.
        db.execute(
            text(
                "INSERT INTO bookings (reference, user_id, slot_id) VALUES (:ref, :user, :slot) "
                "ON CONFLICT (reference) DO NOTHING"
            ),
            {"ref": request.reference, "user": request.user_id, "slot": request.slot_id},
        )
        row = db.execute(
            select(bookings.c.id, bookings.c.user_id, bookings.c.slot_id).where(
                bookings.c.reference == request.reference
            )
        ).one()
        if (row.user_id, row.slot_id) != (request.user_id, request.slot_id):
            raise ReferenceConflict(f"booking {request.reference} exists for another user or slot")
        if request.amount_cents > 0:
            db.execute(
                text(
                    "INSERT INTO payments (booking_id, amount_cents, currency, idempotency_key) "
                    "VALUES (:booking, :amount, :currency, :key) ON CONFLICT DO NOTHING"
                ),
                {
                    "booking": row.id,
                    "amount": request.amount_cents,
                    "currency": request.currency,
                    "key": request.payment_key,
                },
            )
        return int(row.id)


def _reserve_and_charge(db: Connection, provider: PaymentProvider, row: Any, request: BookingRequest) -> str:
    # The slot lock serialises every booking of this slot from here to commit.
    db.execute(select(time_slots.c.id).where(time_slots.c.id == row.slot_id).with_for_update())
    taken = db.execute(
        select(bookings.c.id).where(bookings.c.slot_id == row.slot_id, bookings.c.status == "confirmed")
    ).first()
    if taken is not None:
        return _close(db, row.id, "cancelled", "slot taken", request.reference)
    payment = db.execute(select(payments).where(payments.c.booking_id == row.id).with_for_update()).first()
    if payment is not None and payment.status == "pending":
        try:
            charge_payment(db, provider, payment, f"booking {request.reference}")
        except PaymentDeclined:
            return _close(db, row.id, "cancelled", "payment declined", request.reference)
    db.execute(
        update(bookings).where(bookings.c.id == row.id).values(status="confirmed", confirmed_at=func.now())
    )
    return f"Booking {request.reference} confirmed"


def charge_payment(db: Connection, provider: PaymentProvider, payment: Any, description: str) -> None:
    """Charge a locked pending payment once (its key deduplicates at the provider) and record it.

    Raises:
        PaymentDeclined: after recording the payment as ``failed``.
    """
    key = payment.idempotency_key or f"payment:{payment.id}"
    try:
        charge = provider.charge(key, payment.amount_cents, payment.currency, description)
    except PaymentDeclined as exc:
        db.execute(
            update(payments)
            .where(payments.c.id == payment.id)
            .values(status="failed", failure_reason=str(exc)[:200], processed_at=func.now())
        )
        raise
    db.execute(
        update(payments)
        .where(payments.c.id == payment.id)
        .values(status="processed", provider_reference=charge.reference, processed_at=func.now())
    )


def _close(db: Connection, booking_id: int, status: str, reason: str, reference: str) -> str:
    db.execute(
        update(bookings)
        .where(bookings.c.id == booking_id)
        .values(status=status, status_reason=reason, closed_at=func.now())
    )
    return f"Booking {reference} {status}: {reason}"


def _notify_once(db: Connection, notifier: Notifier, booking_id: int) -> None:
    status = db.execute(select(bookings.c.status).where(bookings.c.id == booking_id)).scalar_one()
    kind: Kind | None = {"confirmed": "confirmation", "cancelled": "cancellation"}.get(status)  # type: ignore[assignment]
    if kind is None:
        return
    column = QUEUED_COLUMN[kind]
    queued = db.execute(select(column).where(bookings.c.id == booking_id)).scalar_one()
    if queued is None:
        notifier.send(kind, [load_notice(db, booking_id)])
        db.execute(update(bookings).where(bookings.c.id == booking_id).values({column.name: func.now()}))


def cancel_booking(
    engine: Engine, provider: PaymentProvider, notifier: Notifier, booking_id: int, reason: str | None
) -> str:
    """Cancel a pending or confirmed booking once: refund a charged payment, queue the email.

    Returns:
        ``"Booking <ref> cancelled"`` (``", refunded"`` when money went back),
        or ``"Already processed"`` when it was already cancelled or expired.

    Raises:
        BookingNotFound: no such booking.
    """
    with engine.begin() as db:
        begin_locked(db)
        row = db.execute(select(bookings).where(bookings.c.id == booking_id).with_for_update()).first()
        if row is None:
            raise BookingNotFound(f"booking {booking_id} does not exist")
        outcome = ALREADY_PROCESSED
        if row.status in ("pending", "confirmed"):
            refunded = _refund(db, provider, booking_id)
            _close(db, booking_id, "cancelled", reason or "cancelled by request", row.reference)
            outcome = f"Booking {row.reference} cancelled" + (", refunded" if refunded else "")
        _notify_once(db, notifier, booking_id)
    return outcome


def _refund(db: Connection, provider: PaymentProvider, booking_id: int) -> bool:
    payment = db.execute(
        select(payments).where(payments.c.booking_id == booking_id).with_for_update()
    ).first()
    if payment is None:
        return False
    if payment.status == "pending":
        db.execute(
            update(payments)
            .where(payments.c.id == payment.id)
            .values(status="failed", failure_reason="cancelled")
        )
        return False
    if payment.status != "processed":
        return False
    refund = provider.refund(
        f"refund:{payment.idempotency_key or payment.id}", payment.provider_reference, payment.amount_cents
    )
    db.execute(
        update(payments)
        .where(payments.c.id == payment.id)
        .values(status="refunded", refund_reference=refund.reference, refunded_at=func.now())
    )
    return True


def expire_pending_bookings(engine: Engine, older_than: timedelta, notifier: Notifier | None = None) -> int:
    """Expire unpaid pending bookings created more than ``older_than`` ago (their payments fail).

    A pending booking whose payment was charged is kept. Bookings a worker is
    processing right now (row locked) are skipped, so expiry never races a
    confirmation. With a ``notifier``, each expired booking's notice is queued
    before the commit: a crash in between leaves the bookings pending, and the
    next run expires them and queues the notices again under the same keys.

    Returns:
        How many bookings expired.
    """
    with engine.begin() as db:
        expired = db.execute(_EXPIRE, {"age": older_than}).scalars().all()
        if expired:
            db.execute(
                update(payments)
                .where(payments.c.booking_id.in_(expired), payments.c.status == "pending")
                .values(status="failed", failure_reason="booking expired")
            )
            if notifier is not None:
                query = notice_query().where(bookings.c.id.in_(expired)).order_by(bookings.c.id)
                notifier.send("expired", [notice_from_row(row) for row in db.execute(query)])
    return len(expired)


_EXPIRE = text("""
UPDATE bookings SET status = 'expired', status_reason = 'not confirmed in time', closed_at = now()
WHERE id IN (
    SELECT b.id FROM bookings AS b
    WHERE b.status = 'pending' AND b.created_at < now() - :age
      AND NOT EXISTS (
          SELECT 1 FROM payments AS p WHERE p.booking_id = b.id AND p.status IN ('processed', 'refunded')
      )
    FOR UPDATE OF b SKIP LOCKED
)
RETURNING id
""")
