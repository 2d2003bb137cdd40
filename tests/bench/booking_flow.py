"""The booking-flow figure: process booking -> payment (HTTP provider) -> confirmation email queued.

N bookings of N free slots are published first, then a fleet booking worker
(its profile as it runs in production) drains them; each charges a real local
HTTP provider and chains its confirmation email to the ``email`` queue. The
rate is N / (last email queued - worker ready). The database share comes from
PostgreSQL itself: the growth of ``pg_stat_database.active_time`` (time its
backends spent executing statements, lock waits included, result-row writes
included) over the drain, divided by the worker processes' wall time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass

from sqlalchemy import text

from tests.bench.harness import ROOT, Bench, read_stamp, worker
from tests.support.payment_provider import running_provider
from tests.support.waiting import wait_until as wait_for

_PUBLISH = """
import json, sys
from app import contracts
from app.producer import enqueue_many
enqueue_many(contracts.PROCESS_BOOKING, json.load(sys.stdin), model=contracts.ProcessBookingArgs, timeout=300)
"""


@dataclass
class Flow:
    """One booking-flow measurement."""

    n: int
    seconds: float
    db_seconds: float
    processes: int

    @property
    def rate(self) -> float:
        """Bookings per second."""
        return self.n / self.seconds

    @property
    def db_ms_per_booking(self) -> float:
        """Milliseconds PostgreSQL spent executing statements per booking."""
        return self.db_seconds * 1000 / self.n

    @property
    def db_share(self) -> float:
        """Share of the worker processes' time that PostgreSQL was executing their statements."""
        return self.db_seconds / (self.seconds * self.processes)


def seed(bench: Bench, n: int) -> list[dict[str, object]]:
    """Empty the booking tables, insert one user, one resource and ``n`` slots; return the booking calls."""
    with bench.engine().begin() as db:
        db.execute(text("TRUNCATE bookings, payments, time_slots, resources, users RESTART IDENTITY CASCADE"))
        user = db.execute(
            text("INSERT INTO users (email, name) VALUES ('bench@example.com', 'Bench') RETURNING id")
        )
        user_id = user.scalar_one()
        resource_id = db.execute(
            text("INSERT INTO resources (name) VALUES ('Bench room') RETURNING id")
        ).scalar_one()
        slots = db.execute(
            text(
                "INSERT INTO time_slots (resource_id, starts_at, ends_at) "
                "SELECT :r, timestamptz '2031-01-01 00:00+00' + i * interval '1 hour', "
                "timestamptz '2031-01-01 01:00+00' + i * interval '1 hour' FROM generate_series(1, :n) i "
                "RETURNING id"
            ),
            {"r": resource_id, "n": n},
        ).scalars()
        return [
            {"reference": f"BENCH-{slot}", "user_id": user_id, "slot_id": slot, "amount_cents": 1900}
            for slot in slots
        ]


def active_seconds(bench: Bench) -> float:
    """PostgreSQL's cumulative statement time in the bench database, once its counters settle."""

    def read() -> float:
        with bench.engine().connect() as db:
            value = db.execute(
                text("SELECT active_time FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
            return float(value or 0) / 1000

    # Backends publish their counters at most once a second, and on exit.
    previous = read()
    for _ in range(20):
        time.sleep(0.4)
        current = read()
        if current == previous:
            return current
        previous = current
    return previous


def measure_booking_flow(bench: Bench, argv: list[str], n: int, processes: int) -> Flow:
    """Publish ``n`` bookings, run the booking worker until every confirmation email is queued."""
    bench.reset()
    calls = seed(bench, n)
    subprocess.run(
        [sys.executable, "-c", _PUBLISH],
        input=json.dumps(calls).encode(),
        cwd=ROOT,
        env=bench.env(),
        check=True,
    )
    wait_for(lambda: bench.depth("booking")[0] >= n, 120, f"{n} bookings on the queue")
    ready = bench.tmp / "ready"
    ready.unlink(missing_ok=True)
    with (
        running_provider() as (url, ledger),
        bench.connection() as connection,
        connection.channel() as channel,
    ):

        def emails() -> int:
            return int(channel.queue_declare("email", passive=True)[1])

        before = active_seconds(bench)
        with worker(bench, argv, ready, PAYMENT_PROVIDER_URL=url):
            started = read_stamp(wait_for(lambda: ready.exists() and ready, 120, "worker ready"))
            wait_for(lambda: emails() >= n, 900, f"{n} confirmation emails", interval=0.02)
            finished = time.time()
        db_seconds = active_seconds(bench) - before
        charges = len(ledger.charges)
    with bench.engine().connect() as db:
        confirmed = db.execute(text("SELECT count(*) FROM bookings WHERE status = 'confirmed'")).scalar_one()
    if (confirmed, charges) != (n, n):
        raise RuntimeError(f"bench: {confirmed} bookings confirmed and {charges} charges for {n} bookings")
    return Flow(n=n, seconds=finished - started, db_seconds=db_seconds, processes=processes)
