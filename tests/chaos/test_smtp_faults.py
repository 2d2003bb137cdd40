"""SMTP down, slow and failing, and the gevent email worker killed: every email once, or a reason."""

from __future__ import annotations

import time

from app import contracts
from app.mail.service import message_id
from tests.chaos.harness import Chaos
from tests.chaos.operations import Operation, recipient
from tests.chaos.smtp import FaultySmtp
from tests.support.waiting import wait_until


def delivered(chaos: Chaos, count: int) -> None:
    """Wait until the SMTP server accepted ``count`` messages."""
    assert chaos.smtp is not None
    smtp = chaos.smtp
    wait_until(lambda: sum(smtp.delivered.values()) >= count, 120, f"{count} delivered emails")


def no_addresses_logged(chaos: Chaos) -> None:
    """No worker wrote a recipient's address to its log."""
    for worker in chaos.workers:
        assert "@example.com" not in worker.log(), f"an email address in the {worker.role} worker's log"


def test_smtp_down_mid_run(chaos: Chaos) -> None:
    operations = chaos.emails(120)
    chaos.start_worker("email")
    assert chaos.smtp is not None

    def fault() -> None:
        delivered(chaos, 30)
        chaos.smtp.stop()  # connections refused: transient, retried with backoff
        time.sleep(3)  # the outage
        chaos.smtp.start()

    report = chaos.run("SMTP down 3 s", operations, fault, interval=0.02)
    assert report.succeeded == 120
    assert max(chaos.smtp.message_ids.values()) == 1
    no_addresses_logged(chaos)


def test_smtp_slow(chaos: Chaos) -> None:
    operations = chaos.emails(100)
    assert chaos.smtp is not None
    chaos.smtp.delay = 1.0  # each DATA answered after a second: sends pile up in flight
    chaos.start_worker("email")

    report = chaos.run("SMTP slow (1 s a message)", operations, lambda: None)
    assert report.succeeded == 100
    no_addresses_logged(chaos)


def test_smtp_failing(chaos: Chaos) -> None:
    operations = chaos.emails(100)
    assert chaos.smtp is not None
    chaos.smtp.fail_first = True  # 451 on every first attempt: retried
    refused = operations[::10]  # 550 for these: failed for good, dead-lettered, not retried
    chaos.smtp.refuse = {recipient(o.op) for o in refused}
    for operation in refused:
        operation.expect = "dlq"
    chaos.start_worker("email")

    report = chaos.run("SMTP 451 then 250; some 550", operations, lambda: None)
    assert report.succeeded == 90
    assert report.dead_lettered == 10
    assert report.duplicate_executions >= 90  # each success took a retry
    no_addresses_logged(chaos)


def test_kill_9_the_email_worker_with_sends_in_flight(chaos: Chaos) -> None:
    # Welcome emails keyed by their task id, booking confirmations by the producer's own key.
    operations = chaos.emails(60) + chaos.emails(60, 61, contracts.SEND_BOOKING_CONFIRMATION)
    assert chaos.smtp is not None
    smtp = chaos.smtp
    smtp.delay = 0.3  # each DATA answered after 0.3 s: dozens of sends are in flight at any moment
    worker = chaos.start_worker("email")

    def fault() -> None:
        nonlocal worker
        for round_ in (1, 2):
            delivered(chaos, 35 * round_)
            worker.kill()  # mid-send: the ledger row stays ``sending``, the message unacked
            worker = chaos.start_worker("email")

    report = chaos.run("kill -9 gevent email worker", operations, fault, interval=0.03)
    assert report.succeeded == 120
    # Every email reached the server under one Message-ID; a copy under the same
    # Message-ID (server accepted, process died before the ledger said ``sent``) is
    # counted in dup deliveries, never as a second email.
    assert report.duplicate_effects == 0
    assert all(mid == message_id(key(o)) for o in operations for mid in ids(smtp, o))
    no_addresses_logged(chaos)


def key(operation: Operation) -> str:
    """The idempotency key the worker sends ``operation`` under."""
    return str(operation.kwargs.get("idempotency_key") or operation.task_id)


def ids(smtp: FaultySmtp, operation: Operation) -> set[str]:
    """The Message-IDs the SMTP server accepted for ``operation``'s recipient."""
    return {mid for to, mid in smtp.copies if to == recipient(operation.op)}
