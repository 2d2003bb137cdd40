"""Payment storage: the PostgreSQL adapter behind the ``PaymentRepository`` protocol."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Engine, func, select, update

from app.schema import payments


class PaymentNotFound(LookupError):
    """No payment has the given id: the task can never succeed."""


class PaymentRepository(Protocol):
    """Where payments live."""

    def mark_processed(self, payment_id: int) -> bool:
        """Move a pending payment to ``processed``.

        Returns:
            True if this call processed it, False if it was already processed.

        Raises:
            PaymentNotFound: no such payment.
        """


class SqlPaymentRepository:
    """Payments in PostgreSQL; the row lock makes concurrent calls process once."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def mark_processed(self, payment_id: int) -> bool:
        """Process the payment under a row lock (see ``PaymentRepository``)."""
        with self._engine.begin() as connection:
            status = connection.execute(
                select(payments.c.status).where(payments.c.id == payment_id).with_for_update()
            ).scalar()
            if status is None:
                raise PaymentNotFound(f"payment {payment_id} does not exist")
            if status == "processed":
                return False
            connection.execute(
                update(payments)
                .where(payments.c.id == payment_id)
                .values(status="processed", processed_at=func.now())
            )
            return True
