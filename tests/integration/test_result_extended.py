"""``RESULT_EXTENDED=true``: a result keeps its task's name, arguments, worker and queue; secrets redacted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from app.celery_app import celery_app
from app.contracts import PROCESS_PAYMENT, REDACTED
from app.tasks.booking_tasks import process_payment
from app.tasks.email_tasks import send_password_reset
from tests.support.smtp_server import SmtpSink
from tests.support.worker_process import WorkerProcess

#: A reset link's token: a secret the result row must never keep.
TOKEN = "tok-3f9a1c77e2"


@pytest.fixture
def extended() -> Iterator[None]:
    """This producer reads extended results (the workers below store them)."""
    celery_app.conf.result_extended = True
    yield
    celery_app.conf.result_extended = False


@pytest.fixture(scope="module")
def booking_worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker("booking", RESULT_EXTENDED="true")


@pytest.fixture(scope="module")
def email_worker(start_worker: Callable[..., WorkerProcess], smtp_sink: SmtpSink) -> WorkerProcess:
    return start_worker("email", SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_sink.port), RESULT_EXTENDED="true")


def test_a_result_keeps_its_tasks_name_arguments_worker_and_queue(
    booking_worker: WorkerProcess, database: Any, extended: None
) -> None:
    # given a pending payment
    with database.begin() as db:
        payment_id = db.execute(
            text("INSERT INTO payments (amount_cents) VALUES (100) RETURNING id")
        ).scalar_one()

    # when it is processed with the seed's call
    result = process_payment.delay(payment_id)
    result.get(timeout=30)

    # then a fresh AsyncResult reads the task's identity from the result row, as Flower does
    stored = celery_app.AsyncResult(result.id)
    assert (stored.name, stored.args, stored.kwargs) == (PROCESS_PAYMENT, [payment_id], {})
    assert stored.worker.startswith("booking@")
    assert (stored.retries, stored.queue) == (0, "booking.process_payment")


def test_a_secret_argument_is_stored_redacted(
    email_worker: WorkerProcess, sink: SmtpSink, database: Any, extended: None
) -> None:
    # when a password reset is sent, its link (a secret in the contract) in a keyword argument
    result = send_password_reset.delay(
        to="ada@example.com",
        name="Ada",
        reset_url=f"https://magnetiq.example/reset?token={TOKEN}",
        expires_minutes=30,
    )
    result.get(timeout=30)
    assert TOKEN in sink.wait_for(1)[0].as_string()  # the email itself carries it

    # then the result keeps the other arguments and the link redacted, nowhere in the row
    stored = celery_app.AsyncResult(result.id)
    assert stored.kwargs == {
        "to": "ada@example.com",
        "name": "Ada",
        "reset_url": REDACTED,
        "expires_minutes": 30,
    }
    with database.connect() as db:
        row = db.execute(
            text("SELECT t::text FROM task_results t WHERE task_id = :id"), {"id": result.id}
        ).one()
    assert TOKEN not in row[0]


def test_without_the_setting_no_arguments_are_stored(database: Any) -> None:
    # given the default settings (this process stores a result as a worker does)
    celery_app.backend.store_result("plain-1", 1, "SUCCESS", request=_Request())

    # then the row has no arguments, worker or queue
    with database.connect() as db:
        row = db.execute(
            text("SELECT args, kwargs, worker, retries, queue FROM task_results WHERE task_id = 'plain-1'")
        ).one()
    assert tuple(row) == (None, None, None, None, None)


class _Request:
    """The fields of a worker's request an extended result reads."""

    task = PROCESS_PAYMENT
    args = (1,)
    kwargs: dict[str, Any] = {}
    hostname = "booking@host"
    retries = 0
    delivery_info = {"routing_key": "booking.process_payment"}
    children: list[Any] = []
