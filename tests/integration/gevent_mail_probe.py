"""Run under gevent as the email worker does: 100 greenlets send through the bridge.

``python -m tests.integration.gevent_mail_probe PORT DSN [--ledger]`` prints one
JSON line: how far a ticker greenlet got while the sends were in flight, and
when each of five concurrent ``pg_sleep`` queries started and ended.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from workers.signals import green_psycopg  # noqa: E402

GREEN = green_psycopg()

import psycopg2  # noqa: E402

from app.db import engine_for  # noqa: E402
from app.mail import emails  # noqa: E402
from app.mail.ledger import SqlDeliveryLedger  # noqa: E402
from app.mail.render import Renderer  # noqa: E402
from app.mail.service import MailService  # noqa: E402
from app.mail.smtp import AioSmtpSender, SmtpConfig  # noqa: E402
from app.settings import sqlalchemy_url  # noqa: E402

SENDS, QUERIES = 100, 5


def main() -> None:
    port, dsn = int(sys.argv[1]), sys.argv[2]
    ledger = None
    if "--ledger" in sys.argv:
        ledger = SqlDeliveryLedger(
            engine_for(sqlalchemy_url(dsn), pool_size=10, max_overflow=20, autocommit=True), 90
        )
    sender = AioSmtpSender(SmtpConfig("127.0.0.1", port, timeout=10))
    service = MailService(sender, Renderer(), "Magnetiq <no-reply@magnetiq.local>", ledger)
    ticks = [0]

    def ticker() -> None:
        while True:
            gevent.sleep(0.01)
            ticks[0] += 1

    def send(i: int) -> str:
        return service.send(emails.welcome(f"user{i}@example.com", f"User {i}", f"probe-{i}"))

    spans: list[tuple[float, float]] = []

    def query() -> None:
        connection = psycopg2.connect(dsn)
        started = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.5)")
        spans.append((started, time.monotonic()))
        connection.close()

    beat = gevent.spawn(ticker)
    before = ticks[0]
    jobs = [gevent.spawn(send, i) for i in range(SENDS)] + [gevent.spawn(query) for _ in range(QUERIES)]
    gevent.joinall(jobs, raise_error=True)
    beat.kill()
    print(
        json.dumps(
            {
                "green_psycopg": GREEN,
                "ticks": ticks[0] - before,
                "sent": sum(1 for job in jobs[:SENDS] if job.value.startswith("Welcome email sent")),
                "spans": spans,
                "opened": sender.pool().opened,
            }
        )
    )
    sender.close()


if __name__ == "__main__":
    main()
