"""End to end: producer -> RabbitMQ -> a real gevent email worker -> SMTP sink -> result row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from celery import states
from kombu import Connection
from sqlalchemy import text

from app import producer
from app.celery_app import celery_app
from app.contracts import SEND_WELCOME_EMAIL, InvalidTaskArguments
from app.tasks.email_tasks import send_welcome_email
from routing import names
from tests.support.broker import queue_depth
from tests.support.smtp_server import SmtpSink
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess


@pytest.fixture(scope="module")
def email_worker(start_worker: Callable[..., WorkerProcess], smtp_sink: SmtpSink) -> WorkerProcess:
    return start_worker("email", SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_sink.port))


def test_welcome_email_arrives_and_success_is_stored(
    email_worker: WorkerProcess, sink: SmtpSink, database: Any
) -> None:
    # when a producer uses the seed's call
    result = send_welcome_email.delay("ada@example.com", "Ada")
    # then the task succeeds...
    assert result.get(timeout=30).startswith("Welcome email sent <")
    # ...the mail arrives with a text and an HTML part...
    (mail,) = sink.wait_for(1)
    assert mail["To"] == "ada@example.com"
    assert mail["Subject"] == "Welcome to Magnetiq, Ada!"
    parts = {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in mail.walk()
        if not part.is_multipart()
    }
    assert "Hello Ada," in parts["text/plain"]
    assert "<h1>Hello Ada,</h1>" in parts["text/html"]
    # ...and SUCCESS is in PostgreSQL
    with database.connect() as db:
        status = db.execute(
            text("SELECT status FROM task_results WHERE task_id = :id"), {"id": result.id}
        ).scalar_one()
    assert status == states.SUCCESS
    assert result.status == states.SUCCESS


def test_hostile_name_is_escaped_not_evaluated(email_worker: WorkerProcess, sink: SmtpSink) -> None:
    result = producer.enqueue_welcome_email("eve@example.com", "<script>alert(1)</script>{{7*7}}")
    result.get(timeout=30)
    (mail,) = sink.wait_for(1)
    html = next(p for p in mail.walk() if p.get_content_type() == "text/html").get_payload(decode=True)
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;{{7*7}}" in html
    assert b"<script>" not in html
    assert b"49" not in html


def test_many_concurrent_emails_all_arrive(email_worker: WorkerProcess, sink: SmtpSink) -> None:
    results = [send_welcome_email.delay(f"user{i}@example.com", f"User {i}") for i in range(100)]
    sink.wait_for(100, timeout=60)
    assert {r.get(timeout=30).split()[0] for r in results} == {"Welcome"}
    assert sorted(m["To"] for m in sink.messages) == sorted(f"user{i}@example.com" for i in range(100))


def test_invalid_arguments_fail_without_retry_and_reach_the_dlq(
    email_worker: WorkerProcess, broker: Connection, sink: SmtpSink
) -> None:
    # given a producer that skipped validation (the producer API refuses it)
    with pytest.raises(InvalidTaskArguments, match="user_email"):
        producer.enqueue_welcome_email("not-an-address", "Mallory")
    with pytest.raises(InvalidTaskArguments, match="user_email"):
        send_welcome_email.delay("not-an-address", "Mallory")  # nor does the task's own call
    result = celery_app.send_task(
        SEND_WELCOME_EMAIL, args=("not-an-address", "Mallory")
    )  # by name: unchecked
    # then the task fails with a clear error...
    with pytest.raises(InvalidTaskArguments, match="user_email: value is not a valid email address"):
        result.get(timeout=30)
    assert result.status == states.FAILURE
    # ...the message is dead-lettered and no mail is sent
    wait_until(lambda: queue_depth(broker, names.dlq(names.EMAIL))[0] == 1, 15, "email.dlq depth 1")
    assert sink.messages == []
    assert "Mallory" not in email_worker.log()


def test_undecodable_body_is_dead_lettered_not_dropped(
    email_worker: WorkerProcess, broker: Connection
) -> None:
    # given a message whose JSON body is broken
    with broker.Producer() as raw:
        raw.publish(
            b"{not json",
            exchange=names.TASKS_EXCHANGE,
            routing_key="email.send_welcome_email",
            content_type="application/json",
            content_encoding="utf-8",
            headers={"task": "app.tasks.email_tasks.send_welcome_email", "id": "broken-1"},
        )
    # then the worker rejects it to email.dlq and keeps running
    wait_until(lambda: queue_depth(broker, names.dlq(names.EMAIL))[0] == 1, 15, "email.dlq depth 1")
    assert email_worker.proc.poll() is None
    assert send_welcome_email.delay("after@example.com", "After").get(timeout=30)
