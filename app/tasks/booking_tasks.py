"""Booking and payment tasks (queue ``booking``, prefork pool)."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from app import contracts
from app.booking import service
from app.booking.repository import SqlPaymentRepository
from app.celery_app import celery_app
from app.tasks import resources
from app.tasks.base import FleetTask


@celery_app.task(
    bind=True,
    base=FleetTask,
    name=contracts.PROCESS_PAYMENT,
    arguments=contracts.ProcessPaymentArgs,
    autoretry_for=(OperationalError,),
)
def process_payment(self: FleetTask, payment_id: int) -> str:
    """Process a payment; a second run returns "Already processed"."""
    return service.process_payment(SqlPaymentRepository(resources.engine()), payment_id)
