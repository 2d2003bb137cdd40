"""The magnetiq command line: set-up commands, clear errors, and the whole fleet under `run`."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import create_engine, make_url, text

from app.tasks.email_tasks import send_welcome_email
from routing import names
from tests.support.broker import queue_depth
from tests.support.cli import magnetiq
from tests.support.environment import worker_env
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.processes import descendants
from tests.support.processes import pid_alive as _alive
from tests.support.waiting import wait_until


def test_topology_check_reports_every_queue(broker: Connection) -> None:
    done = magnetiq("topology", "check")
    assert done.returncode == 0, done.stderr
    for queue in (*names.WORK_QUEUES, *map(names.dlq, names.WORK_QUEUES)):
        assert f"ok      {queue} " in done.stdout


@pytest.mark.parametrize(
    ("scheme", "argv", "name", "hint"),
    [
        ("amqp", ("topology", "apply"), "RabbitMQ", "rabbitmq-server -detached"),
        ("redis", ("dlq", "list", "booking"), "Redis", "redis-server --daemonize yes"),
    ],
)
def test_unreachable_broker_is_one_clear_line(
    scheme: str, argv: tuple[str, ...], name: str, hint: str
) -> None:
    done = magnetiq(*argv, CELERY_BROKER_URL=f"{scheme}://u:s3cret@127.0.0.1:{free_port()}/0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"{name} is not reachable" in lines[0]
    assert hint in lines[0]
    assert "s3cret" not in done.stderr


def test_unreachable_database_is_one_clear_line() -> None:
    done = magnetiq("db", "upgrade", DATABASE_URL=f"postgresql://postgres:pw@127.0.0.1:{free_port()}/x")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "PostgreSQL is not reachable at postgresql+psycopg2://postgres:***@127.0.0.1" in lines[0]
    assert "pg_ctlcluster" in lines[0]
    assert ":pw@" not in done.stderr


def test_db_upgrade_creates_a_missing_database(database: Any) -> None:
    url = make_url(str(database.url)).set(database=f"magnetiq_new_{uuid.uuid4().hex[:8]}")
    plain = url.render_as_string(hide_password=False)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        done = magnetiq("db", "upgrade", DATABASE_URL=plain)
        assert done.returncode == 0, done.stderr
        check = create_engine(url)
        with check.connect() as db:
            tables = set(
                db.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars()
            )
            indexes = set(
                db.execute(
                    text("SELECT indexname FROM pg_indexes WHERE tablename = 'task_results'")
                ).scalars()
            )
        check.dispose()
        assert {"task_results", "group_results", "sessions", "payments", "alembic_version"} <= tables
        assert "ix_task_results_date_done" in indexes
        assert magnetiq("db", "upgrade", DATABASE_URL=plain).returncode == 0  # idempotent
    finally:
        with admin.connect() as db:
            db.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        admin.dispose()


@pytest.mark.slow
def test_run_brings_up_the_fleet_and_stops_it_cleanly(
    broker: Connection, database: Any, tmp_path: Path
) -> None:
    # given `magnetiq run` with no SMTP_HOST: it starts its own sink
    env = worker_env(SMTP_PORT=str(free_port()))
    env.pop("SMTP_HOST", None)
    mail_dir = tmp_path / "mail"
    log = (tmp_path / "run.log").open("wb")
    runner = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "run", "--mail-dir", str(mail_dir)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # then consumers appear on every work queue
        for queue in names.WORK_QUEUES:
            wait_until(lambda q=queue: queue_depth(broker, q)[1] >= 1, 90, f"a consumer on {queue}", 0.25)
        # and a welcome email lands in the mail directory as a readable file
        assert send_welcome_email.delay("grace@example.com", "Grace").get(timeout=30)
        mail = wait_until(lambda: list((mail_dir / "new").glob("*")), 15, "a mail file")
        content = mail[0].read_text()
        assert "To: grace@example.com" in content
        assert "Hello Grace," in content
        children = set(descendants(runner.pid))
        assert len(children) >= 6  # sink, four workers, beat (and prefork children)
    finally:
        # when it gets Ctrl-C
        runner.send_signal(signal.SIGINT)
        code = runner.wait(60)
        log.close()
    # then everything it started is gone
    leftover = [pid for pid in children if _alive(pid)]
    assert leftover == [], (tmp_path / "run.log").read_text()[-3000:]
    assert code in (0, 130), (tmp_path / "run.log").read_text()[-3000:]
    for queue in names.WORK_QUEUES:
        wait_until(lambda q=queue: queue_depth(broker, q)[1] == 0, 15, f"no consumer left on {queue}")
