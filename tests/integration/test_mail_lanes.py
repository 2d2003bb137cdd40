"""Transactional email never waits behind bulk email: reminders go out in a lane of their own."""

from __future__ import annotations

import time
from collections.abc import Callable

from kombu import Connection

from app import contracts, producer
from routing import names
from tests.support.broker import queue_depth
from tests.support.smtp_server import ScriptedHandler, ScriptedSmtp, SmtpSink
from tests.support.worker_process import WorkerProcess

#: Reminders queued ahead of the password reset.
BACKLOG = 10_000


def test_a_password_reset_published_behind_10000_reminders_starts_within_2_s(
    smtp_sink: SmtpSink,
    smtp_server: ScriptedSmtp,
    smtp: ScriptedHandler,
    start_worker: Callable[..., WorkerProcess],  # after the servers: its workers stop before them
    broker: Connection,
) -> None:
    # given an email worker, and a bulk worker sending reminders to a server that takes a second each
    smtp.reset(delay=1.0)
    start_worker("email", SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_sink.port))
    start_worker("bulk", SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_server.port))
    reminder = {"name": "Ada", "resource": "Room A", "starts_at": "2030-01-01T09:00:00+00:00"}
    calls = [
        {
            **reminder,
            "to": f"r{n}@example.com",
            "booking_ref": f"BK-{n}",
            "ends_at": "2030-01-01T10:00:00+00:00",
        }
        for n in range(BACKLOG)
    ]
    producer.enqueue_many(contracts.SEND_BOOKING_REMINDER, calls, timeout=120)
    assert queue_depth(broker, names.BULK)[0] > BACKLOG - 1000  # the bulk lane has its backlog

    # when a password reset is published behind them
    started = time.monotonic()
    reset = producer.enqueue_password_reset(
        "ada@example.com", "Ada", "https://magnetiq.example/reset/abc", 30
    )

    # then it is sent within 2 s, in its own lane, while the reminders still wait in theirs
    assert reset.get(timeout=30).startswith("Password reset sent <")
    assert time.monotonic() - started < 2.0
    assert queue_depth(broker, names.BULK)[0] > BACKLOG / 2
    assert [message["To"] for message in smtp_sink.messages] == ["ada@example.com"]
