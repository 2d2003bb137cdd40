"""Provider limits and retry bounds on a real email worker started with tight settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import text

from app import producer
from app.contracts import SEND_WELCOME_EMAIL, WelcomeEmailArgs
from app.mail.service import message_id
from app.mail.smtp import SmtpTransientError
from app.tasks.email_tasks import send_welcome_email
from routing import names
from tests.support.broker import queue_depth
from tests.support.smtp_server import ScriptedHandler, ScriptedSmtp
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess

MAX_RETRIES = 2
MAX_CONNECTIONS = 3
RATE = 25
SMTP_TIMEOUT = 2
#: The worker's lease on a key it is sending: 6 x SMTP_TIMEOUT + 30 s.
LEASE = 6 * SMTP_TIMEOUT + 30


@pytest.fixture(scope="module")
def email_worker(start_worker: Callable[..., WorkerProcess], smtp_server: ScriptedSmtp) -> WorkerProcess:
    return start_worker(
        "email",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp_server.port),
        EMAIL_MAX_RETRIES=str(MAX_RETRIES),
        SMTP_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        SMTP_RATE_LIMIT=str(RATE),
        SMTP_TIMEOUT=str(SMTP_TIMEOUT),
    )


def welcome_all(count: int) -> list[Any]:
    calls = [{"user_email": f"user{i}@example.com", "user_name": f"User {i}"} for i in range(count)]
    return producer.enqueue_many(SEND_WELCOME_EMAIL, calls, model=WelcomeEmailArgs)


def hold_for_a_dead_attempt(database: Any, key: str, lease_left: float, task_id: str | None = None) -> None:
    """Leave ``key`` as an attempt that died mid-send does: ``sending``, ``lease_left`` s to go."""
    with database.begin() as db:
        db.execute(
            text(
                "INSERT INTO email_deliveries (idempotency_key, template, message_id, task_id, status, "
                "attempts, updated_at) VALUES (:k, 'welcome', 'x', :t, 'sending', 1, "
                "now() - make_interval(secs => :age))"
            ),
            {"k": key, "t": task_id, "age": LEASE - lease_left},
        )


def test_retries_stop_after_the_bound_and_the_email_is_dead_lettered(
    email_worker: WorkerProcess, smtp: ScriptedHandler, broker: Connection, database: Any
) -> None:
    # given a server that always defers
    smtp.default = "451"

    # when an email is sent
    result = producer.enqueue_welcome_email("ada@example.com", "Ada")

    # then it is tried once plus EMAIL_MAX_RETRIES times, then fails to email.dlq
    with pytest.raises(SmtpTransientError, match="SMTP 451"):
        result.get(timeout=60)
    assert smtp.attempts == 1 + MAX_RETRIES
    wait_until(lambda: queue_depth(broker, names.dlq(names.EMAIL))[0] == 1, 15, "email.dlq depth 1")
    with database.connect() as db:
        status, attempts = db.execute(
            text("SELECT status, attempts FROM email_deliveries WHERE idempotency_key = :k"), {"k": result.id}
        ).one()
    assert (status, attempts) == ("pending", 1 + MAX_RETRIES)
    assert smtp.messages == []


def test_open_connections_stay_under_the_cap(email_worker: WorkerProcess, smtp: ScriptedHandler) -> None:
    # given a server that holds each message one second (within SMTP_TIMEOUT)
    smtp.reset(delay=1.0)

    # when 15 emails are queued at once for a worker of 100 greenlets
    results = welcome_all(15)

    # then all arrive, never more than SMTP_MAX_CONNECTIONS at a time
    assert all(r.get(timeout=90).startswith("Welcome email sent") for r in results)
    assert len(smtp.messages) == 15
    assert smtp.peak_in_flight == MAX_CONNECTIONS
    assert smtp.connections <= MAX_CONNECTIONS


def test_sends_keep_to_the_rate_limit(email_worker: WorkerProcess, smtp: ScriptedHandler) -> None:
    # when 50 emails are queued at once
    results = welcome_all(50)

    # then they arrive no faster than SMTP_RATE_LIMIT per second (the limiter
    # spaces starts by 1/rate; slack covers scheduling, never a faster rate)
    assert all(r.get(timeout=90).startswith("Welcome email sent") for r in results)
    arrived = sorted(smtp.accepted_at)
    assert len(arrived) == 50
    assert arrived[-1] - arrived[0] >= 49 / RATE * 0.8


def test_a_key_left_sending_by_a_dead_attempt_is_sent_once_its_lease_ends(
    email_worker: WorkerProcess, smtp: ScriptedHandler, database: Any
) -> None:
    # given an attempt that claimed a key, then died mid-send (its row stays
    # `sending`), with four seconds of its lease left
    key = "welcome:dead-attempt"
    hold_for_a_dead_attempt(database, key, lease_left=4)

    # when the email is delivered again (a redelivery of the dead attempt's message)
    result = producer.enqueue_welcome_email("ada@example.com", "Ada", idempotency_key=key)

    # then it waits out the lease, takes the key over and sends it once
    assert result.get(timeout=60).startswith("Welcome email sent")
    assert len(smtp.messages) == 1
    with database.connect() as db:
        status, attempts = db.execute(
            text("SELECT status, attempts FROM email_deliveries WHERE idempotency_key = :k"), {"k": key}
        ).one()
    assert (status, attempts) == ("sent", 2)
    assert "being sent by another attempt" in email_worker.log()


def test_busy_waits_spend_none_of_the_failure_retries(
    email_worker: WorkerProcess, smtp: ScriptedHandler, database: Any, broker: Connection
) -> None:
    # given a dead attempt of the task that claimed its key and never finished:
    # its lease has 12 s left, more busy waits (one per 5 s) than MAX_RETRIES
    task_id = "busy-then-421"
    hold_for_a_dead_attempt(database, task_id, lease_left=12, task_id=task_id)
    # and a server that defers the next two deliveries
    smtp.plan = ["421", "421"]

    # when the task's message is delivered again
    result = send_welcome_email.apply_async(args=("ada@example.com", "Ada"), task_id=task_id)

    # then it waits out the lease, takes the key over, retries both 421s and sends once
    assert result.get(timeout=90) == f"Welcome email sent {message_id(task_id)}"
    assert (smtp.attempts, len(smtp.messages)) == (3, 1)
    retries = [line for line in email_worker.log().splitlines() if f"[{task_id}] retry:" in line]
    assert len([line for line in retries if "DeliveryBusy" in line]) > MAX_RETRIES
    assert queue_depth(broker, names.dlq(names.EMAIL))[0] == 0
