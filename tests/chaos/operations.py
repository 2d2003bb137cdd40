"""The operations a fault case asks for: what each publishes, how it is sent, and how it ended."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from kombu.utils.uuid import uuid

from app import contracts
from app.celery_app import celery_app
from app.producer import publish
from routing import names

#: Seconds one publish call may take (each confirm wait and connection attempt).
PUBLISH_TIMEOUT = 5.0
#: The fleet's tasks the cases publish through the producer API, with their argument models.
MODELS: dict[str, type[contracts.Arguments]] = {
    contracts.PROCESS_PAYMENT: contracts.ProcessPaymentArgs,
    contracts.SEND_WELCOME_EMAIL: contracts.WelcomeEmailArgs,
    contracts.SEND_BOOKING_CONFIRMATION: contracts.BookingConfirmationArgs,
}
#: The job name and first slot of the maintenance operations (``Chaos.maintenance``): one slot a
#: second from a moment no payment or email number reaches.
MAINTENANCE_JOB = "chaos-drain"
MAINTENANCE_SLOTS = datetime(2040, 1, 1, tzinfo=UTC)
#: The email tasks: a success means a message the SMTP server accepted.
EMAIL_TASKS = (contracts.SEND_WELCOME_EMAIL, contracts.SEND_BOOKING_CONFIRMATION)


@dataclass
class Operation:
    """One task the harness asked for, as the producer saw it."""

    op: int
    task_name: str
    expect: str  # "success", "failure" or "dlq"
    task_id: str = field(default_factory=uuid)
    attempts: int = 0
    confirmed: bool = False
    error: str | None = None
    slowest: float = 0.0

    @property
    def kwargs(self) -> dict[str, Any]:
        """The task's keyword arguments."""
        if self.task_name == contracts.PROCESS_PAYMENT:
            return {"payment_id": self.op}
        if self.task_name == contracts.SEND_WELCOME_EMAIL:
            return {"user_email": recipient(self.op), "user_name": f"User {self.op}"}
        if self.task_name == contracts.SEND_BOOKING_CONFIRMATION:
            return {
                "to": recipient(self.op),
                "name": f"User {self.op}",
                "booking_ref": f"BK-{self.op}",
                "resource": "Studio A",
                "starts_at": "2026-12-01T10:00:00+01:00",
                "ends_at": "2026-12-01T11:30:00+01:00",
                "idempotency_key": f"booking-confirmation:{self.op}",  # the producer's own key
            }
        if self.task_name == contracts.CLEANUP_OLD_SESSIONS:  # a periodic slot: ``op`` is its epoch second
            return {"job": MAINTENANCE_JOB, "slot": datetime.fromtimestamp(self.op, UTC).isoformat()}
        return {"op": self.op}

    @property
    def has_effect(self) -> bool:
        """Whether success means an effect the ledger sees (a processed payment, a delivered email)."""
        return self.task_name in (contracts.PROCESS_PAYMENT, contracts.CLEANUP_OLD_SESSIONS, *EMAIL_TASKS)


def recipient(op: int) -> str:
    """The address an email operation is sent to."""
    return f"op-{op}@example.com"


def outcome_of(
    o: Operation, status: str | None, dead: bool, effects: Counter[int], charges: Counter[int | None]
) -> str:
    """How one operation ended: ``dlq``, ``success``, ``failure``, ``refused`` or ``lost``.

    A success needs its effect; a payment's also needs its charge (a payment
    marked processed that the provider never charged is lost money).
    """
    if dead:
        return "dlq"
    charged = o.task_name != contracts.PROCESS_PAYMENT or charges[o.op] >= 1
    if status == "SUCCESS" and (not o.has_effect or effects[o.op] >= 1) and charged:
        return "success"
    if status == "FAILURE":
        return "failure"
    if not o.confirmed and o.error and not effects[o.op]:
        return "refused"
    return "lost"


def send_with(app: Celery, operation: Operation, **options: Any) -> None:
    """Publish ``operation`` with ``app``'s ``send_task`` (the fleet's routes), retrying a failed connect.

    The faults module's tasks have no route: they go to the booking queue.
    """
    if operation.task_name.startswith("tests."):
        short = operation.task_name.rsplit(".", 1)[1]
        options.update(queue=names.BOOKING, routing_key=names.routing_key(names.BOOKING, short))
    retry_policy = {"max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
    app.send_task(
        operation.task_name, kwargs=operation.kwargs, task_id=operation.task_id, timeout=PUBLISH_TIMEOUT,
        retry=True, retry_policy=retry_policy, **options,
    )  # fmt: skip


def maintenance_runs(count: int) -> list[Operation]:
    """``count`` periodic runs, one slot each (a run's start is its effect), as beat sends them."""
    first = int(MAINTENANCE_SLOTS.timestamp())
    return [Operation(op, contracts.CLEANUP_OLD_SESSIONS, "success") for op in range(first, first + count)]


def publish_as_producer(operation: Operation) -> None:
    """Publish with the producer API (``app.producer.publish``, confirmed) where it names the task.

    The faults module's tasks have no argument model: they go out with ``send_task``.
    """
    model = MODELS.get(operation.task_name)
    if model is None:
        send_with(celery_app, operation, confirm_timeout=PUBLISH_TIMEOUT)
        return
    publish(operation.task_name, model, operation.kwargs, task_id=operation.task_id, timeout=PUBLISH_TIMEOUT)
