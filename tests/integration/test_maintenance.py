"""Maintenance jobs on real tables and queues, directly and through a real maintenance worker."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from kombu import Connection, Exchange, Producer
from sqlalchemy import text

from app.celery_app import celery_app
from app.contracts import CLEANUP_OLD_SESSIONS, REPORT_DEAD_LETTERS, SEND_PASSWORD_RESET
from app.maintenance import runs as beat_runs
from app.maintenance.service import cleanup_old_sessions
from app.tasks.maintenance import cleanup_old_sessions as cleanup_task
from routing import names
from tests.support.broker import queue_depth
from tests.support.cli import magnetiq
from tests.support.ports import free_port
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess


def _sessions(database: Any, old: int, fresh: int, prefix: str = "") -> None:
    with database.begin() as db:
        for i in range(old):
            db.execute(
                text(
                    "INSERT INTO sessions (id, user_id, created_at) "
                    "VALUES (:id, 1, now() - interval '8 days')"
                ),
                {"id": f"{prefix}old-{i}"},
            )
        for i in range(fresh):
            db.execute(
                text(
                    "INSERT INTO sessions (id, user_id, created_at) "
                    "VALUES (:id, 1, now() - interval '6 days')"
                ),
                {"id": f"{prefix}new-{i}"},
            )


def _left(database: Any) -> list[str]:
    with database.connect() as db:
        return sorted(db.execute(text("SELECT id FROM sessions")).scalars())


def test_service_deletes_only_sessions_older_than_seven_days(database: Any) -> None:
    _sessions(database, old=3, fresh=2)
    assert cleanup_old_sessions(database) == 3
    assert _left(database) == ["new-0", "new-1"]


@pytest.fixture(scope="module")
def maintenance_worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """One real maintenance worker for the module's tests."""
    return start_worker("maintenance")


def test_task_on_the_maintenance_worker(maintenance_worker: WorkerProcess, database: Any) -> None:
    _sessions(database, old=4, fresh=1)
    assert cleanup_task.delay().get(timeout=30) == "Cleaned up 4 expired sessions"
    assert cleanup_task.delay().get(timeout=30) == "Cleaned up 0 expired sessions"
    assert _left(database) == ["new-0"]


def _runs(database: Any) -> list[Any]:
    with database.connect() as db:
        return list(db.execute(text("SELECT * FROM periodic_runs ORDER BY slot")))


def test_a_duplicate_message_of_a_slot_does_nothing(maintenance_worker: WorkerProcess, database: Any) -> None:
    # given old sessions, and the message beat sends for one slot
    _sessions(database, old=3, fresh=1)
    slot = {"job": "cleanup-old-sessions", "slot": "2026-11-24T03:15:00+00:00"}
    first = celery_app.send_task(CLEANUP_OLD_SESSIONS, kwargs=slot)
    assert first.get(timeout=30) == "Cleaned up 3 expired sessions"

    # when more sessions age and a second message of the same slot arrives
    _sessions(database, old=2, fresh=0, prefix="later-")
    again = celery_app.send_task(CLEANUP_OLD_SESSIONS, kwargs=slot).get(timeout=30)

    # then it does nothing, and the slot's one run row keeps the first run's result
    assert again == "Already ran cleanup-old-sessions for slot 2026-11-24T03:15:00+00:00"
    assert _left(database) == ["later-old-0", "later-old-1", "new-0"]
    [run] = _runs(database)
    assert (run.job, run.status, run.task_id) == ("cleanup-old-sessions", "succeeded", first.id)
    assert run.detail == {"result": "Cleaned up 3 expired sessions"}

    # and the next slot runs
    later = {"job": "cleanup-old-sessions", "slot": "2026-11-25T03:15:00+00:00"}
    assert celery_app.send_task(CLEANUP_OLD_SESSIONS, kwargs=later).get(timeout=30) == (
        "Cleaned up 2 expired sessions"
    )


def _results(database: Any, rows: dict[str, str | None], task_name: str | None = None) -> None:
    with database.begin() as db:
        for task_id, age in rows.items():
            db.execute(
                text(
                    "INSERT INTO task_results (task_id, status, task_name, date_done) "
                    "VALUES (:id, 'SUCCESS', :name, now() - CAST(:age AS interval))"
                ),
                {"id": task_id, "name": task_name, "age": age},
            )


def test_expire_results_run_by_hand_deletes_only_expired_rows(
    maintenance_worker: WorkerProcess, database: Any
) -> None:
    # given result rows past RESULT_EXPIRES (seven days), fresh ones and a pending one
    _results(database, {"old-1": "8 days", "old-2": "30 days", "fresh": "6 days", "pending": None})
    # and password resets, whose rows the task keeps an hour (its own result_expires)
    _results(database, {"reset-old": "2 hours", "reset-fresh": "30 minutes"}, SEND_PASSWORD_RESET)

    # when the job is run once by hand
    done = magnetiq("schedule", "run", "expire-results", "--wait", "60")

    # then only the expired rows are gone, and the run is recorded as a run by hand
    assert done.returncode == 0, done.stderr
    assert "sent expire-results: app.tasks.maintenance.expire_results[" in done.stdout
    assert "result: Expired 3 results" in done.stdout
    with database.connect() as db:
        left = set(db.execute(text("SELECT task_id FROM task_results")).scalars())
    assert {"fresh", "pending", "reset-fresh"} <= left
    assert not {"old-1", "old-2", "reset-old"} & left
    [run] = _runs(database)
    assert (run.job, run.status) == ("expire-results", "succeeded")
    assert run.sent_by.endswith(f"@{socket.gethostname()}")


def _publish(broker: Connection, exchange: str, routing_key: str, headers: dict[str, Any]) -> None:
    with broker.channel() as channel:
        producer = Producer(channel, Exchange(exchange, type="topic", passive=True))
        producer.publish({"n": 1}, routing_key=routing_key, headers=headers, serializer="json")


def _dead_letter_one_email(broker: Connection) -> None:
    """Reject a real message from the email queue, so RabbitMQ dead-letters it with x-death."""
    _publish(broker, names.TASKS_EXCHANGE, "email.dead", {})
    with broker.channel() as channel:
        message = wait_until(lambda: channel.basic_get(names.EMAIL, no_ack=False), 30, "the email message")
        channel.basic_reject(message.delivery_tag, requeue=False)
    wait_until(lambda: queue_depth(broker, "email.dlq")[0] == 1, 30, "the dead letter in email.dlq")


def test_dead_letter_report_counts_and_ages_without_losing_a_message(
    maintenance_worker: WorkerProcess, broker: Connection, database: Any
) -> None:
    # given one real dead letter in email.dlq, and one in booking.dlq published an hour ago
    _dead_letter_one_email(broker)
    hour_ago = time.time() - 3600
    _publish(broker, names.DLX_EXCHANGE, "booking.dlq", {"sent_at": hour_ago})
    wait_until(lambda: queue_depth(broker, "booking.dlq")[0] == 1, 30, "the message in booking.dlq")

    # when the report runs, twice
    reports = [celery_app.send_task(REPORT_DEAD_LETTERS).get(timeout=30) for _ in range(2)]

    # then it counts each DLQ and ages its head (from x-death, else sent_at) ...
    for report in reports:
        by_queue = {row["queue"]: row for row in report}
        assert list(by_queue) == ["email.dlq", "bulk.dlq", "booking.dlq", "maintenance.dlq"]
        assert by_queue["email.dlq"]["messages"] == 1
        assert 0 <= by_queue["email.dlq"]["oldest_age_seconds"] < 3600
        assert by_queue["booking.dlq"]["messages"] == 1
        assert 3600 <= by_queue["booking.dlq"]["oldest_age_seconds"] < 3600 + 300
        assert by_queue["maintenance.dlq"] == {
            "queue": "maintenance.dlq",
            "messages": 0,
            "oldest_age_seconds": None,
        }

    # ... and every peeked message is still there, unchanged
    assert queue_depth(broker, "email.dlq")[0] == 1
    with broker.channel() as channel:
        kept = channel.basic_get("booking.dlq", no_ack=False)
        assert json.loads(kept.body) == {"n": 1}
        assert kept.headers["sent_at"] == hour_ago
        channel.basic_reject(kept.delivery_tag, requeue=True)


def test_schedule_list_shows_every_job_with_its_last_and_next_run(database: Any) -> None:
    # given one job that ran (a recorded slot) and two that never did
    with database.begin() as db:
        db.execute(
            text(
                "INSERT INTO periodic_runs (job, slot, status, sent_by) "
                "VALUES ('report-dead-letters', '2026-01-02 03:05:00+00', 'succeeded', 'beat-a')"
            )
        )

    # when the schedule is listed
    done = magnetiq("schedule", "list")

    # then each job shows its cron, last run and status, and a next run in the future
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "leader: none (no beat holds the lease)"
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {
        "cleanup-old-sessions",
        "expire-results",
        "report-dead-letters",
        "expire-pending-bookings",
        "send-tomorrows-reminders",
    }
    assert rows["report-dead-letters"][6:9] == ["2026-01-02", "03:05:00", "succeeded"]
    assert rows["cleanup-old-sessions"][6:7] == ["-"] and "never" in rows["cleanup-old-sessions"]
    assert rows["cleanup-old-sessions"][1:6] == ["15", "3", "*", "*", "*"]


def test_schedule_run_of_an_unknown_job_names_the_known_ones(database: Any) -> None:
    done = magnetiq("schedule", "run", "no-such-job")
    assert done.returncode == 2
    assert (
        "no job 'no-such-job'; known: cleanup-old-sessions, expire-results, report-dead-letters, "
        "expire-pending-bookings, send-tomorrows-reminders" in done.stderr
    )
    assert _runs(database) == []


def test_a_slot_runs_again_only_on_redelivery_or_after_a_failure(database: Any) -> None:
    # given a slot beat claimed under the slot's task id
    slot = datetime(2026, 11, 24, 3, 15, tzinfo=UTC)
    task_id = beat_runs.slot_task_id("job", slot)
    assert beat_runs.hold_lease(database, "beat-a", 30).leader
    with database.begin() as db:
        assert beat_runs.claim_slot(db, "job", slot, task_id, "beat-a")

    # when a message of the slot runs it, a second message of the slot arrives meanwhile
    with (
        beat_runs.running(database, "job", slot, task_id) as first,
        beat_runs.running(database, "job", slot, task_id) as second,
    ):
        assert (first, second) == ("run", "running")
    # ... and the first one's worker died (its lock went with it): the redelivery runs it
    with beat_runs.running(database, "job", slot, task_id) as redelivered:
        assert redelivered == "run"
        beat_runs.finish_run(database, "job", slot, task_id, ok=False, detail='{"error": "OperationalError"}')

    # then a failed run is run again (a retry), a succeeded one by no message of the slot
    with beat_runs.running(database, "job", slot, task_id) as retry:
        assert retry == "run"
        beat_runs.finish_run(database, "job", slot, task_id, ok=True, detail='{"result": "done"}')
    with beat_runs.running(database, "job", slot, task_id) as late:
        assert late == "ran"
    [run] = _runs(database)
    assert (run.task_id, run.status, run.sent_by, run.detail) == (
        task_id,
        "succeeded",
        "beat-a",
        {"result": "done"},
    )


def test_schedule_commands_without_a_database_are_one_clear_line() -> None:
    down = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/x"
    for command in (("schedule", "list"), ("schedule", "run", "expire-results")):
        done = magnetiq(*command, DATABASE_URL=down)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1
        assert "PostgreSQL is not reachable at postgresql+psycopg2://postgres:***@127.0.0.1" in lines[0]
        assert "s3cret" not in done.stderr
