"""Limits that hold across the fleet: emails per second in total and per domain, shared in PostgreSQL.

The rule lives in one SQL statement (``app.mail.throttle``), so it is tested
against PostgreSQL: directly, with threads racing for one key, and through 1,
2 and 4 real email workers counted at the SMTP server. A rate limit is an
upper bound: the tests assert that no more got through than the limit allows
(+10 % for the SMTP server's clock against PostgreSQL's), never how fast a
slow machine managed to send.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from app.mail.throttle import FleetThrottle
from app.tasks.email_tasks import send_welcome_email
from tests.support.ports import free_port
from tests.support.smtp_server import ScriptedHandler, ScriptedSmtp
from tests.support.worker_process import WorkerProcess

#: The fleet's limit and the per-domain one, emails per second.
FLEET, DOMAIN = 40.0, 10.0


def rate(times: list[float]) -> float:
    """Sends per second from the first to the last of ``times``."""
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0])


def test_threads_racing_for_one_key_are_spaced_at_its_rate(database: Any) -> None:
    # given four threads sharing a limit of 40 a second through PostgreSQL
    throttle = FleetThrottle(database, FLEET, 0.0)
    granted: list[float] = []

    def send(count: int) -> None:
        for _ in range(count):
            throttle.wait("example.com")
            granted.append(time.monotonic())

    # when they take 40 slots between them
    threads = [threading.Thread(target=send, args=(10,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # then every slot was granted, never faster than 40 a second
    assert len(granted) == 40
    assert rate(granted) <= FLEET * 1.1, rate(granted)


def test_the_fleet_and_domain_limits_hold_with_one_two_and_four_email_workers(
    start_worker: Callable[..., WorkerProcess], smtp_server: ScriptedSmtp, smtp: ScriptedHandler
) -> None:
    env = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_FLEET_RATE_LIMIT": str(FLEET),
        "SMTP_DOMAIN_RATE_LIMIT": str(DOMAIN),
    }
    workers: list[WorkerProcess] = []
    try:
        check_with(workers, start_worker, smtp, env)
    finally:
        for worker in workers:  # the next test's worker must be the only one on the queue
            worker.stop()


def check_with(
    workers: list[WorkerProcess],
    start_worker: Callable[..., WorkerProcess],
    smtp: ScriptedHandler,
    env: dict[str, str],
) -> None:
    """Send through 1, 2, then 4 email workers, then to one domain: the limits hold each time."""
    for count in (1, 2, 4):
        # given 1, then 2, then 4 email workers sharing a limit of 40 a second
        while len(workers) < count:
            workers.append(start_worker("email", "--hostname", f"limit-{len(workers)}@%h", **env))
        smtp.reset()

        # when 60 emails to ten domains are queued at once
        sent = [
            send_welcome_email.apply_async((f"u{n}@d{n % 10}.example", f"U{n}"), task_id=f"fleet-{count}-{n}")
            for n in range(60)
        ]

        # then all 60 went out, never faster than the fleet's limit
        assert len([result.get(timeout=60) for result in sent]) == 60
        assert len(smtp.accepted_at) == 60
        assert rate(smtp.accepted_at) <= FLEET * 1.1, (count, rate(smtp.accepted_at))

    # and 15 emails to one domain go out no faster than its own limit, across the 4 workers
    smtp.reset()
    one = [
        send_welcome_email.apply_async((f"v{n}@one.example", "V"), task_id=f"domain-{n}") for n in range(15)
    ]
    assert len([result.get(timeout=60) for result in one]) == 15
    assert rate(smtp.accepted_at) <= DOMAIN * 1.1, rate(smtp.accepted_at)


def test_an_unreachable_store_leaves_each_worker_its_own_limit(
    start_worker: Callable[..., WorkerProcess], smtp_server: ScriptedSmtp, smtp: ScriptedHandler
) -> None:
    # given an email worker whose shared limit lives on a PostgreSQL that is not there,
    # and whose own limit is 20 a second
    worker = start_worker(
        "email",
        "--hostname",
        "limit-alone@%h",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp_server.port),
        SMTP_FLEET_RATE_LIMIT=str(FLEET),
        SMTP_RATE_LIMIT="20",
        SMTP_RATE_STORE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere",
    )

    # when 30 emails are queued
    sent = [send_welcome_email.apply_async((f"w{n}@d.example", "W"), task_id=f"alone-{n}") for n in range(30)]

    # then all go out, spaced by the worker's own limit, and the worker said why
    assert len([result.get(timeout=60) for result in sent]) == 30
    assert rate(smtp.accepted_at) <= 20 * 1.1, rate(smtp.accepted_at)
    assert "fleet rate limit: store unreachable, each process keeps only SMTP_RATE_LIMIT" in worker.log()
