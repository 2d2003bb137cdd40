"""The benchmark harness on a tiny N, so `make bench` cannot rot (no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection

from tests.bench.__main__ import FIGURES, SIZES, measurements
from tests.support.environment import TEST_BROKER_URL, TEST_DATABASE_URL, worker_env
from tests.support.paths import ROOT


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
def test_bench_runs_every_figure_and_prints_the_table(broker: Connection, database: Any) -> None:
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
        assert any(row.startswith(f"| {figure.name} |") and figure.baseline in row for row in rows), figure
    # the machine's speed before every measurement, summed up under the table
    probes = re.findall(
        r"^\[1/1\] .+; before it: CPU loop \d+ ms, PostgreSQL commit [\d,]+ us\)$", done.stderr, re.M
    )
    assert len(probes) == len(measurements(SIZES["quick"])), done.stderr
    assert re.search(r"^Machine speed: a fixed CPU loop took \d+-\d+ ms", done.stdout, re.M), done.stdout
    assert re.search(r"^Disk: one durable PostgreSQL commit took [\d,]+-[\d,]+ us", done.stdout, re.M)
    # every drain stored one result row per task and the sentinel; the ignored run only the sentinel
    drains = re.findall(r"\] (.+?) +[\d,.]+ +(\d+) tasks in [\d.]+s, (\d+) result rows", done.stderr)
    assert len(drains) == 7, done.stderr
    for name, tasks, stored in drains:
        expected = 1 if "ignored" in name else int(tasks) + 1
        assert int(stored) == expected, name
    # each drain says where its CPU went and how busy the cores were, in the log and the table
    assert len(re.findall(r"; CPU us per item: worker main [\d,]+, worker children [\d,]+", done.stderr)) == 9
    cpu_rows = [
        row
        for row in rows
        if re.fullmatch(r"\| .+ \| [\d,]+ \| [\d,]+ MiB( \| [\d,]+){4} \| \d+% \| [\d,]+ us \|", row)
    ]
    assert len(cpu_rows) == 9, done.stdout
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
