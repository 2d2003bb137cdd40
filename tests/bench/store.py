"""Result-store floor: the fleet's backend against a bare psycopg2 upsert, one process.

Each variant writes ``n`` fresh SUCCESS rows into ``task_results`` with the
statement the backend prepares, one row and one commit per result, from one
process (``python -m tests.bench.store VARIANT N`` prints results/s):

- ``fleet``: ``PostgresBackend.mark_as_done``, as a worker child stores a result;
- ``fleet-pgbouncer``: the same through a private PgBouncer in transaction mode,
  with plain statements, as a process runs once it found its prepared
  statements gone (what the fall-back behind a pooler costs);
- ``raw``: ``EXECUTE`` of the same prepared upsert on one psycopg2 connection;
- ``raw-async``: the same with ``synchronous_commit = off``, which shows what the
  commit's WAL flush costs (the fleet never runs so by default).

The gap between ``fleet`` and ``raw`` is the backend's own overhead; the gap
between ``raw`` and ``raw-async`` is the disk's.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg2
from sqlalchemy import make_url

from app.settings import sqlalchemy_url
from tests.bench.harness import ROOT, Bench
from tests.support.pgbouncer import PgBouncer

VARIANTS = ("fleet", "fleet-pgbouncer", "raw", "raw-async")
#: Untimed writes first: connection set-up and statement preparation.
WARMUP = 50


def _fleet_writer(prepared: bool = True) -> Callable[[int], None]:
    from celery.app.task import Context

    from app.celery_app import celery_app

    backend = celery_app.backend
    backend.prepared = prepared
    request = Context(task="bench.noop", children=[], delivery_info={})

    def write(i: int) -> None:
        request.id = str(uuid.uuid4())
        backend.mark_as_done(request.id, i, request=request)

    return write


def _connect(database_url: str) -> Any:
    """A bare psycopg2 connection in autocommit mode: one statement, one round trip, one commit."""
    url = make_url(sqlalchemy_url(database_url))
    connection = psycopg2.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database
    )
    connection.autocommit = True
    return connection


def _raw_writer(synchronous_commit: bool) -> Callable[[int], None]:
    from kombu.utils.json import dumps

    from app.result_backend.statements import PREPARED, STORE
    from app.settings import get_settings

    connection = _connect(get_settings().result_backend_url)
    cursor = connection.cursor()
    cursor.execute("SET synchronous_commit = " + ("on" if synchronous_commit else "off"))
    statement = PREPARED[STORE]
    cursor.execute(statement.prepare)

    def write(i: int) -> None:
        cursor.execute(
            statement.execute,
            (
                str(uuid.uuid4()),
                "SUCCESS",
                "bench.noop",
                dumps(i),
                None,
                None,
                datetime.now(UTC),
                *(None,) * 5,
            ),
        )

    return write


def rate(variant: str, n: int) -> float:
    """Results stored per second by ``variant`` in this process."""
    if variant.startswith("fleet"):
        write = _fleet_writer(prepared=variant == "fleet")
    else:
        write = _raw_writer(variant == "raw")
    for i in range(WARMUP):
        write(i)
    started = time.perf_counter()
    for i in range(n):
        write(i)
    return n / (time.perf_counter() - started)


#: A one-row table on the bench database that ``commit_us`` updates.
PROBE_TABLE = "bench_commit_probe"


def commit_us(bench: Bench, n: int = 25) -> float:
    """Median microseconds of one durable commit on the bench database.

    A one-row update with ``synchronous_commit = on``: a round trip plus the
    WAL flush, the part of a stored result that depends on the disk. Taken
    before every measurement, it shows when the disk, not the code, moved a
    rate that stores results.
    """
    connection = _connect(bench.database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (id int PRIMARY KEY, n bigint)")
            cursor.execute(f"INSERT INTO {PROBE_TABLE} VALUES (1, 0) ON CONFLICT (id) DO NOTHING")
            cursor.execute("SET synchronous_commit = on")
            times = []
            for _ in range(n):
                started = time.perf_counter()
                cursor.execute(f"UPDATE {PROBE_TABLE} SET n = n + 1 WHERE id = 1")
                times.append(time.perf_counter() - started)
    finally:
        connection.close()
    return statistics.median(times) * 1e6


def measure_store(bench: Bench, variant: str, n: int) -> float:
    """Run one variant in a fresh process on the bench database; return results/s.

    Raises:
        RuntimeError: the variant did not leave one row per write.
    """
    bench.reset()
    pooler = PgBouncer(make_url(bench.database_url).port or 5432) if variant == "fleet-pgbouncer" else None
    env = bench.env()
    try:
        if pooler is not None:
            pooler.start()
            env["DATABASE_URL"] = pooler.url(make_url(bench.database_url).database or "")
        out = subprocess.run(
            [sys.executable, "-m", "tests.bench.store", variant, str(n)],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        if pooler is not None:
            pooler.close()
    rows = bench.result_rows("task_results")
    if rows != WARMUP + n:
        raise RuntimeError(f"bench: {variant} result store left {rows} rows for {WARMUP + n} writes")
    return float(out.stdout.split()[-1])


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in VARIANTS:
        sys.exit(f"usage: python -m tests.bench.store {{{','.join(VARIANTS)}}} N")
    print(f"{rate(sys.argv[1], int(sys.argv[2])):.1f}")
