"""The benchmark harness on a tiny N, so `make bench` cannot rot (no timing is asserted).

The run takes one measurement of each code path (each app's worker set-up:
the fleet's, plain Celery's and the seed's; the prefork and gevent pools;
the Redis broker; each publisher, the latency and result-wait probes, the
loop lag, the booking flow, the mail lanes and the result store); the
variants that differ from one of those only by a setting or an app (metrics
off, results ignored, the quiet start, a p99 taken from a p50's run, plain
Celery's latency, one mail lane) are left to `make bench`, to keep `make
test` within its time. Also the check every
drain ends with: a drain whose results are missing, doubled or failed stops
the run instead of printing a rate.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection

from tests.bench.harness import Bench, measure_drain
from tests.bench.plan import FIGURES, PLAIN, SIZES, measurements, plain_argv
from tests.bench.results import RedisResults, ResultsMismatch, TableResults, check_results
from tests.support.environment import TEST_BROKER_URL, TEST_DATABASE_URL, unavailable, worker_env
from tests.support.paths import ROOT

#: The measurements the smoke run takes: one of each code path (see the module's docstring).
SMOKE = (
    "fleet booking, results, metrics on",
    "plain booking, stock db backend",
    "seed setup, Redis broker and results",
    "fleet booking on Redis, results in Redis",
    "fleet email, results",
    "raw aiosmtplib, same connections",
    "plain email, stock db backend",
    "fleet bulk publish",
    "apply_async + confirm_publish",
    "raw py-amqp streamed confirms",
    "fleet latency p99",
    "fleet result wait p50",
    "fleet loop lag",
    "plain loop lag",
    "seed loop lag",
    "fleet booking flow",
    "fleet reset behind reminders, own lane",
    "fleet result store",
    "raw psycopg2 upsert",
)
#: A Redis database of this test's own for the seed's setup (the bench itself uses another).
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


@pytest.fixture
def seed_redis() -> Iterator[str]:
    """The test's Redis database, flushed before and after (that database only)."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        client.close()
        unavailable(f"Redis unreachable at {TEST_REDIS_URL} ({exc})")
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def plain_celery_tables(database: Any) -> Iterator[None]:
    """Drop plain Celery's result tables and the commit probe's afterwards: not the fleet's schema."""
    yield
    with database.begin() as db:
        db.exec_driver_sql(
            "DROP TABLE IF EXISTS plain_celery_taskmeta, plain_celery_groupmeta, bench_commit_probe"
        )
        db.exec_driver_sql("DROP SEQUENCE IF EXISTS task_id_sequence, taskset_id_sequence")


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.usefixtures("plain_celery_tables")
def test_bench_runs_every_figure_and_prints_the_table(
    broker: Connection, database: Any, seed_redis: str, tmp_path: Path
) -> None:
    ran = [name for name in measurements(SIZES["quick"]) if any(wanted in name for wanted in SMOKE)]
    assert len(ran) == 21, ran  # every SMOKE name matched (two match a second measurement too)
    results = tmp_path / "RESULTS.md"
    results.write_text("# earlier runs\n\n## an earlier run\n\nits table\n")
    before = results.read_text()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.bench",
            "--quick",
            "--reps",
            "1",
            "--broker-url",
            TEST_BROKER_URL,
            "--database-url",
            TEST_DATABASE_URL,
            "--redis-url",
            seed_redis,
            "--results",
            str(results),
            *(f"--measurement={name}" for name in ran),
        ],
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=590,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    for figure in FIGURES:
        if figure.fleet in ran and figure.baseline in ran:
            row_of = [row for row in rows if row.startswith(f"| {figure.name} |") and figure.baseline in row]
            assert row_of, figure
    # the machine's speed before every measurement, summed up under the table
    probes = re.findall(
        r"^\[1/1\] .+; before it: CPU loop \d+ ms, PostgreSQL commit [\d,]+ us\)$", done.stderr, re.M
    )
    assert len(probes) == len(ran), done.stderr
    assert re.search(r"^Machine speed: a fixed CPU loop took \d+-\d+ ms", done.stdout, re.M), done.stdout
    assert re.search(r"^Disk: one durable PostgreSQL commit took [\d,]+-[\d,]+ us", done.stdout, re.M)
    # every drain stored one result per task and the sentinel (the harness fails the run otherwise);
    # the ignored runs only the sentinel's
    drains = re.findall(r"\] (.+?) +[\d,.]+ +(\d+) tasks in [\d.]+s, (\d+) result rows", done.stderr)
    assert [name for name, _, _ in drains] == [
        "fleet booking, results, metrics on",
        "plain booking, stock db backend",
        "seed setup, Redis broker and results",
        "fleet booking on Redis, results in Redis",
    ], done.stderr
    for name, tasks, stored in drains:
        expected = 1 if "ignored" in name else int(tasks) + 1
        assert int(stored) == expected, name
    # the seed's setup really ran on Redis: its results were there, and the database is its own
    assert re.search(
        r"seed setup, Redis broker and results .+ CPU us per item: .+, Redis [\d,]+;", done.stderr
    )
    # each drain says where its CPU went and how busy the cores were, in the log and the table
    assert len(re.findall(r"; CPU us per item: worker main [\d,]+, worker children [\d,]+", done.stderr)) == 6
    cpu_rows = [
        row
        for row in rows
        if re.fullmatch(r"\| .+ \| [\d,]+ \| [\d,]+ MiB( \| [\d,]+){5} \| \d+% \| [\d,]+ us \|", row)
    ]
    assert len(cpu_rows) == 6, done.stdout
    # the booking flow booked, charged and queued an email for every booking (the harness checks), and says so
    assert re.search(
        r"\] fleet booking flow +[\d,.]+ +20 bookings in [\d.]+s, [\d.]+ ms in PostgreSQL", done.stderr
    )
    flow_rows = [
        line for line in done.stdout.splitlines() if line.startswith("| booking flow, booking profile | ")
    ]
    assert len(flow_rows) == 1, done.stdout
    # both email drains delivered every email and stored one result row per email
    emails = re.findall(r"\] (.+?) +[\d,.]+ +(\d+) emails in [\d.]+s, (\d+) result rows", done.stderr)
    assert [name for name, _, _ in emails] == ["fleet email, results", "plain email, stock db backend"]
    for name, sent, rows in emails:
        assert int(rows) == int(sent), name
    # the run was appended after the earlier one, which stayed as it was
    recorded = results.read_text()
    assert recorded.startswith(before), recorded
    run = recorded[len(before) :]
    assert re.match(r"\n## \d{4}-\d\d-\d\d \d\d:\d\d UTC, commit \S+", run), run
    assert "- machine: " in run and "- services: RabbitMQ " in run and ", Redis " in run, run
    assert "--quick" in run and all(row in run for row in rows), run


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("plain_celery_tables")
def test_a_drain_whose_results_are_missing_fails_the_run(broker: Connection, database: Any) -> None:
    # given plain Celery storing its results in its own table, while the drain looks for them in the fleet's
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(TEST_BROKER_URL, TEST_DATABASE_URL, TEST_REDIS_URL, Path(tmp))
        wrong = bench.rabbit(PLAIN, "booking", "task_results")
        # when it drains, then no rate comes out: every task's result is missing where it should be
        with pytest.raises(ResultsMismatch, match="11 missing"):
            measure_drain(bench, plain_argv("prefork", 1, 1, "booking"), wrong, 10)


def test_the_check_counts_missing_doubled_failed_and_unexpected_results(database: Any) -> None:
    # given a result table holding a result twice, a failure and one for a task that stores none
    table = TableResults(database, "bench_check")
    try:
        with database.begin() as db:
            db.exec_driver_sql("CREATE TABLE bench_check (task_id text, status text)")
            db.exec_driver_sql(
                "INSERT INTO bench_check VALUES ('a', 'SUCCESS'), ('b', 'SUCCESS'), ('b', 'SUCCESS'), "
                "('c', 'FAILURE'), ('x', 'SUCCESS')"
            )
        # when the drain expects a, b, c and d, then it fails and says what was wrong
        expected = "1 missing, 1 for tasks that store none, 1 stored twice, 1 not SUCCESS"
        with pytest.raises(ResultsMismatch, match=expected):
            check_results(table, ["a", "b", "c", "d"], "the drain")
        # when every expected task stored exactly one success, then the check passes and counts them
        with database.begin() as db:
            db.exec_driver_sql("DELETE FROM bench_check WHERE task_id <> 'a'")
        assert check_results(table, ["a"], "the drain") == 1
    finally:
        with database.begin() as db:
            db.exec_driver_sql("DROP TABLE IF EXISTS bench_check")


def test_the_check_reads_the_seeds_results_from_redis(seed_redis: str) -> None:
    # given results stored by Celery's Redis backend as the seed configures it, one of them lost
    seed = Celery("magnetiq2", broker=seed_redis, backend=seed_redis)
    for task_id in ("t1", "t2", "t3"):
        seed.backend.store_result(task_id, 1, "SUCCESS")
    seed.backend.forget("t2")
    results = RedisResults(seed_redis)
    # when the drain is checked, then the lost one fails it; the others pass
    with pytest.raises(ResultsMismatch, match="1 missing"):
        check_results(results, ["t1", "t2", "t3"], "the seed's drain")
    assert check_results(results, ["t1", "t3"], "the seed's drain") == 2
