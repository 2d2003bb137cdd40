"""Dead-letter, fix the cause, replay: a real booking worker runs the replayed task to success."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from celery import states
from celery.result import AsyncResult
from click.testing import CliRunner
from kombu import Connection
from sqlalchemy import text

from app import producer
from app.booking.repository import PaymentNotFound
from app.celery_app import celery_app
from routing import names
from tests.support.broker import queue_depth
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess
from workers.cli import main

PAYMENT_ID = 424_242


def test_replayed_task_runs_once_its_cause_is_fixed(
    start_worker: Callable[..., WorkerProcess], broker: Connection, database: Any
) -> None:
    # given a booking worker, and a payment task that failed (no such payment) into the DLQ
    start_worker("booking")
    failed = producer.enqueue_process_payment(PAYMENT_ID)
    with pytest.raises(PaymentNotFound):
        failed.get(timeout=30)
    dlq = names.dlq(names.BOOKING)
    wait_until(lambda: queue_depth(broker, dlq)[0] == 1, 15, "the failed task in booking.dlq")

    # when the cause is fixed (the payment exists) and the DLQ is replayed
    with database.begin() as db:
        db.execute(text("INSERT INTO payments (id, amount_cents) VALUES (:id, 1200)"), {"id": PAYMENT_ID})
    result = CliRunner().invoke(main, ["dlq", "replay", "booking"])
    assert result.exit_code == 0, result.output
    assert f"replayed {failed.id} app.tasks.booking_tasks.process_payment -> booking" in result.output

    # then the worker runs the same task id to success, once, and the DLQ stays empty
    def status() -> Any:
        with database.connect() as db:
            return db.execute(text("SELECT status FROM payments WHERE id = :id"), {"id": PAYMENT_ID}).scalar()

    wait_until(lambda: status() == "processed", 30, "the replayed payment to be processed")
    # (a fresh AsyncResult: the first one cached its FAILURE)
    replayed = wait_until(
        lambda: (r := AsyncResult(failed.id, app=celery_app)).state == states.SUCCESS and r,
        30,
        "the task's result to turn SUCCESS",
    )
    assert replayed.result == f"Payment {PAYMENT_ID} processed"
    assert queue_depth(broker, dlq)[0] == 0
    assert queue_depth(broker, names.BOOKING)[0] == 0
