"""Payment storage: the PostgreSQL adapter behind the ``PaymentRepository`` protocol."""

from __future__ import annotations

from typing import Literal, Protocol

from sqlalchemy import Engine, select

from app.booking.bookings import begin_locked, charge_payment
from app.booking.provider import PaymentDeclined, PaymentProvider
from app.schema import payments

#: What processing a payment did: charged it now, found it final, or was declined now.
Outcome = Literal["processed", "already", "declined"]


class PaymentNotFound(LookupError):
    """No payment has the given id: the task can never succeed."""


class PaymentRepository(Protocol):
    """Where payments live."""

    def process(self, payment_id: int) -> Outcome:
        """Charge a pending payment once; a final one (processed, failed, refunded) is left alone.

        Raises:
            PaymentNotFound: no such payment.
        """


class SqlPaymentRepository:
    """Payments in PostgreSQL; the row lock makes concurrent calls charge once."""

    def __init__(self, engine: Engine, provider: PaymentProvider) -> None:
        self._engine = engine
        self._provider = provider

    def process(self, payment_id: int) -> Outcome:
        """Charge the payment under a row lock (see ``PaymentRepository``)."""
        with self._engine.begin() as connection:
            begin_locked(connection)
            payment = connection.execute(
                select(payments).where(payments.c.id == payment_id).with_for_update()
            ).first()
            if payment is None:
                raise PaymentNotFound(f"payment {payment_id} does not exist")
            if payment.status != "pending":
                return "already"
            try:
                charge_payment(connection, self._provider, payment, f"payment {payment_id}")
            except PaymentDeclined:
                return "declined"
            return "processed"
