"""The memory guard: a leaking gevent email worker restarts itself warm, in place, losing nothing."""

from __future__ import annotations

from collections.abc import Callable

from app.mail.service import message_id
from app.tasks.email_tasks import send_welcome_email
from routing import names
from tests.support.canvas_tasks import INCLUDE, leak
from tests.support.smtp_server import ScriptedHandler, ScriptedSmtp
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess


def test_a_leaking_email_worker_restarts_itself_warm_and_sends_every_email_once(
    start_worker: Callable[..., WorkerProcess], smtp_server: ScriptedSmtp, smtp: ScriptedHandler
) -> None:
    # given an email worker limited to 300 MiB, sending to a server that takes 3 s per email
    smtp.reset(delay=3.0)
    worker = start_worker(
        "email", *INCLUDE, SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_server.port), WORKER_MAX_MEMORY_MIB="300"
    )

    # when 20 emails are being sent, a task leaks 400 MiB into its process, and 20 more emails follow
    ids = [f"guard-{n}" for n in range(40)]
    sent = [send_welcome_email.apply_async((f"u{n}@example.com", f"U{n}"), task_id=ids[n]) for n in range(20)]
    wait_until(lambda: smtp.in_flight > 0, 30, "the first sends to be in flight")
    leaked = leak.apply_async((400,), exchange=names.TASKS_EXCHANGE, routing_key="email.tests.leak")
    sent += [
        send_welcome_email.apply_async((f"u{n}@example.com", f"U{n}"), task_id=ids[n]) for n in range(20, 40)
    ]

    # then the guard shut the worker down warm and it started again in the same process
    assert leaked.get(timeout=60) == 400
    wait_until(lambda: worker.log().count(" ready.") == 2, 90, "the worker to start again")
    log = worker.log()
    assert "memory guard: resident" in log and "over WORKER_MAX_MEMORY_MIB=300" in log
    assert worker.proc.poll() is None  # the same process (pid), exec'd anew: its supervisor saw nothing

    # and every email was sent exactly once: none lost in the restart, none sent twice
    assert [result.get(timeout=90) for result in sent] == [f"Welcome email sent {message_id(i)}" for i in ids]
    received = sorted(message["Message-ID"] for message in smtp.messages)
    assert received == sorted(message_id(i) for i in ids)
