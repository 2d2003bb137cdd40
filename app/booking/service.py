"""Payment use cases, given their repository (bookings: ``app.booking.bookings``)."""

from __future__ import annotations

from app.booking.repository import PaymentRepository

ALREADY_PROCESSED = "Already processed"


def process_payment(repository: PaymentRepository, payment_id: int) -> str:
    """Charge a pending payment once; a repeat call changes nothing.

    Returns:
        ``"Payment <id> processed"`` the first time, ``"Payment <id> declined"``
        when the provider refused it, ``"Already processed"`` after.
    """
    outcome = repository.process(payment_id)
    if outcome == "processed":
        return f"Payment {payment_id} processed"
    if outcome == "declined":
        return f"Payment {payment_id} declined"
    return ALREADY_PROCESSED
