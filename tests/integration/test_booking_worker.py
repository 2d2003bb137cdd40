"""Payments on a real prefork booking worker: idempotent, validated, dead-lettered."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from celery import states
from kombu import Connection
from sqlalchemy import text

from app import producer
from app.booking.repository import PaymentNotFound
from app.celery_app import celery_app
from app.contracts import PROCESS_PAYMENT, InvalidTaskArguments
from app.tasks.booking_tasks import process_payment
from routing import names
from tests.support.broker import queue_depth
from tests.support.payment_provider import Ledger
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess


@pytest.fixture(scope="module")
def booking_worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker("booking")


def _payment(database: Any, amount_cents: int = 1200) -> int:
    with database.begin() as db:
        return int(
            db.execute(
                text("INSERT INTO payments (amount_cents) VALUES (:a) RETURNING id"), {"a": amount_cents}
            ).scalar_one()
        )


def test_second_run_returns_already_processed(
    booking_worker: WorkerProcess, database: Any, ledger: Ledger
) -> None:
    payment_id = _payment(database)
    assert process_payment.delay(payment_id).get(timeout=30) == f"Payment {payment_id} processed"
    assert producer.enqueue_process_payment(payment_id).get(timeout=30) == "Already processed"
    with database.connect() as db:
        status = db.execute(text("SELECT status FROM payments WHERE id = :id"), {"id": payment_id}).scalar()
    assert status == "processed"
    assert len(ledger.charges) == 1


def test_concurrent_duplicates_process_once(
    booking_worker: WorkerProcess, database: Any, ledger: Ledger
) -> None:
    payment_id = _payment(database)
    results = [process_payment.delay(payment_id) for _ in range(6)]
    outcomes = sorted(r.get(timeout=30) for r in results)
    assert outcomes == ["Already processed"] * 5 + [f"Payment {payment_id} processed"]
    assert len(ledger.charges) == 1 and ledger.requests == 1


def test_declined_payment_is_recorded_once(
    booking_worker: WorkerProcess, database: Any, ledger: Ledger
) -> None:
    payment_id = _payment(database, amount_cents=4002)
    ledger.declined.add(4002)
    assert process_payment.delay(payment_id).get(timeout=30) == f"Payment {payment_id} declined"
    assert process_payment.delay(payment_id).get(timeout=30) == "Already processed"
    with database.connect() as db:
        status = db.execute(text("SELECT status FROM payments WHERE id = :id"), {"id": payment_id}).scalar()
    assert status == "failed"
    assert ledger.charges == {}


@pytest.mark.parametrize("bad", ["abc", -5, 0, 1.5])
def test_wrong_argument_fails_and_is_dead_lettered(
    booking_worker: WorkerProcess, broker: Connection, bad: object
) -> None:
    # published by name, as a producer without the task code does (nothing checks it on the way)
    result = celery_app.send_task(PROCESS_PAYMENT, args=(bad,))
    with pytest.raises(InvalidTaskArguments, match="payment_id"):
        result.get(timeout=30)
    assert result.status == states.FAILURE
    wait_until(lambda: queue_depth(broker, names.dlq(names.BOOKING))[0] == 1, 15, "booking.dlq depth 1")


@pytest.mark.parametrize("bad", ["42", "abc", -5, 1.5])
def test_a_seed_style_call_with_a_wrong_argument_fails_in_the_caller(broker: Connection, bad: object) -> None:
    # when the seed's call passes an id the task cannot take (a string id, a negative one)
    with pytest.raises(InvalidTaskArguments, match=r"process_payment: invalid arguments: payment_id: "):
        process_payment.delay(bad)

    # then the caller was told which argument and why, and nothing was published
    assert queue_depth(broker, names.BOOKING)[0] == 0


def test_unknown_payment_fails_without_retry(booking_worker: WorkerProcess, broker: Connection) -> None:
    result = process_payment.delay(999_999)
    with pytest.raises(PaymentNotFound, match="payment 999999 does not exist"):
        result.get(timeout=30)
    wait_until(lambda: queue_depth(broker, names.dlq(names.BOOKING))[0] == 1, 15, "booking.dlq depth 1")
    assert "Retry in" not in booking_worker.log()
