"""Workers behind PgBouncer in transaction mode: the pooler restarted, PostgreSQL restarted behind it."""

from __future__ import annotations

import time

from sqlalchemy.engine import make_url

from tests.chaos.harness import Chaos
from tests.support.pgbouncer import PgBouncer

#: Seconds between operations, so the producer is still publishing when the fault lands.
PACE = 0.05
#: The message a worker process logs when its result store falls back to plain statements.
FELL_BACK = "did not outlive its transaction"


def pooled(chaos: Chaos, pooler: PgBouncer) -> str:
    """The case's database URL through the pooler."""
    database = make_url(chaos.url).database
    assert database
    return pooler.url(database)


def test_pgbouncer_restarted_mid_run(chaos: Chaos, pooler: PgBouncer) -> None:
    worker = chaos.start_worker(
        "booking", "--concurrency", "2", delay=0.05, DATABASE_URL=pooled(chaos, pooler)
    )
    operations = chaos.payments(200)

    def fault() -> None:
        chaos.midway(operations, 60, 30)
        pooler.stop()
        time.sleep(3)  # the outage: every client connection is cut
        pooler.start()

    report = chaos.run("PgBouncer restarted (transaction mode)", operations, fault, interval=PACE)
    assert report.succeeded == 200
    assert worker.proc.poll() is None  # the worker rode out the outage


def test_postgresql_restarted_behind_pgbouncer(chaos: Chaos, pooler: PgBouncer) -> None:
    worker = chaos.start_worker(
        "booking", "--concurrency", "2", delay=0.05, DATABASE_URL=pooled(chaos, pooler)
    )
    operations = chaos.payments(200)

    def fault() -> None:
        chaos.midway(operations, 60, 30)
        chaos.postgres.restart()

    report = chaos.run("PostgreSQL restarted behind PgBouncer", operations, fault, interval=PACE)
    assert report.succeeded == 200
    # the workers' client connections outlived their server sessions: the stores fell back to plain SQL
    assert FELL_BACK in worker.log()
