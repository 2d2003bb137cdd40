"""Transactional email behind bulk email: a password reset published behind N queued reminders.

N booking reminders are queued first, then the workers start and a password
reset is published; the figure is the time from that publish until the
reset's result is stored (``get()`` returns). The fleet as it ships keeps
reminders in their own lane: the ``bulk`` queue, drained by the ``bulk``
worker, while the reset goes to ``email`` and its worker. The baseline is the
same fleet with the reminders on ``email`` (one lane, as before there were
two): the reset waits its turn behind them. Both send to the bench SMTP
server, which holds each message 0.2 s.
"""

from __future__ import annotations

from contextlib import ExitStack

from tests.bench.email import smtp_server
from tests.bench.harness import Bench, run_script, worker
from tests.support.waiting import wait_until as wait_for

_FILL = """
import sys
from tests.bench.plain_app import celery_app as app
n, queue = int(sys.argv[1]), sys.argv[2]
booking = {'name': 'Ada', 'resource': 'Room A', 'starts_at': '2030-01-01T09:00:00+00:00',
           'ends_at': '2030-01-01T10:00:00+00:00'}
with app.producer_or_acquire() as producer:
    for i in range(n):
        app.send_task('app.tasks.email_tasks.send_booking_reminder', queue=queue,
                      routing_key=f'{queue}.send_booking_reminder', producer=producer,
                      kwargs={**booking, 'to': f'r{i}@example.com', 'booking_ref': f'BK-{i}'})
"""
_RESET = """
import time
from app import producer
started = time.monotonic()
reset = producer.enqueue_password_reset('ada@example.com', 'Ada', 'https://magnetiq.example/reset/x', 30)
reset.get(timeout=900)
print((time.monotonic() - started) * 1000)
"""


def measure_lane(bench: Bench, workers: dict[str, list[str]], n: int, queue: str) -> float:
    """Queue ``n`` reminders on ``queue``, start ``workers`` (profile: argv); ms until a reset's result."""
    bench.reset()
    with smtp_server(bench) as (port, _):
        run_script(bench, _FILL, str(n), queue)
        wait_for(lambda: bench.depth(queue)[0] >= n, 120, f"{n} reminders on {queue}")
        with ExitStack() as running:
            for profile, argv in workers.items():
                ready = bench.tmp / f"ready-{profile}"
                ready.unlink(missing_ok=True)
                running.enter_context(worker(bench, argv, ready, SMTP_HOST="127.0.0.1", SMTP_PORT=str(port)))
                wait_for(ready.exists, 120, f"the {profile} worker ready", 0.01)
            return float(run_script(bench, _RESET).split()[-1])
