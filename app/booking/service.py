"""Booking and payment use cases, given their repositories."""

from __future__ import annotations

from app.booking.repository import PaymentRepository

ALREADY_PROCESSED = "Already processed"


def process_payment(repository: PaymentRepository, payment_id: int) -> str:
    """Process a pending payment once; a repeat call changes nothing.

    Returns:
        ``"Payment <id> processed"`` the first time, ``"Already processed"`` after.
    """
    if repository.mark_processed(payment_id):
        return f"Payment {payment_id} processed"
    return ALREADY_PROCESSED
