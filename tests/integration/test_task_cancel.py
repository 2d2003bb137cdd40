"""Cancel that lasts: kept in PostgreSQL, honoured after restarts, by every replica, and by running tasks."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.result import AsyncResult
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

from app import producer
from app.celery_app import celery_app
from routing import names
from tests.support.broker import queue_depth
from tests.support.canvas_tasks import INCLUDE, fail, patient, stubborn, tally
from tests.support.cli import magnetiq
from tests.support.ports import free_port
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess


@pytest.fixture
def booking_workers(start_worker: Callable[..., WorkerProcess]) -> Iterator[Callable[..., WorkerProcess]]:
    """Start booking workers for one test; all are stopped when it ends, so the next starts with none."""
    started: list[WorkerProcess] = []

    def start(name: str, **env: str) -> WorkerProcess:
        worker = start_worker("booking", *INCLUDE, "--hostname", f"{name}@%h", **env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="module")
def pair(
    start_worker: Callable[..., WorkerProcess], tmp_path_factory: pytest.TempPathFactory
) -> list[tuple[WorkerProcess, int]]:
    """Two booking workers for the rest of the module, each with its metrics port; 2 s of grace."""
    started = []
    for name in ("cancel-x", "cancel-y"):
        port = free_port()
        env = {"METRICS_PORT": str(port), "METRICS_HOST": "127.0.0.1", "CANCEL_GRACE_SECONDS": "2"}
        worker = start_worker(
            "booking",
            *INCLUDE,
            "--hostname",
            f"{name}@%h",
            METRICS_DIR=str(tmp_path_factory.mktemp(name)),
            **env,
        )
        started.append((worker, port))
    return started


def state(task_id: str) -> str:
    return str(AsyncResult(task_id, app=celery_app).state)


def runs(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def revoked_count(port: int) -> float:
    """``celery_task_revoked_total`` of a worker's /metrics, summed over its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        families = text_string_to_metric_families(reply.read().decode())
        return sum(s.value for f in families for s in f.samples if s.name == "celery_task_revoked_total")


def learned(worker: WorkerProcess, count: int) -> Callable[[], bool]:
    """True once ``worker`` has logged cancellations up to ``#count``."""
    return lambda: f"up to #{count}" in worker.log()


def test_a_cancelled_task_is_skipped_by_a_worker_started_later_and_after_a_restart(
    booking_workers: Callable[..., WorkerProcess], broker: Connection, tmp_path: Path
) -> None:
    # given three tasks published while no worker is up, two of them then cancelled
    ran = tmp_path / "ran"
    queued = [tally.apply_async((n, str(ran)), task_id=f"queued-{n}") for n in range(3)]
    assert queue_depth(broker, names.BOOKING) == (3, 0)
    first = [producer.cancel("queued-0"), producer.cancel("queued-1")]
    assert [(c.state, c.cancelled) for c in first] == [("PENDING", True)] * 2

    # when a worker starts
    worker = booking_workers("cancel-a")

    # then it runs the third and skips the cancelled two, recording REVOKED
    assert queued[2].get(timeout=60) == 2
    wait_until(lambda: [state(r.id) for r in queued[:2]] == ["REVOKED"] * 2, 30, "the two to be skipped")
    assert runs(ran) and len(runs(ran)) == 1

    # and a task cancelled before it is published, then published after the worker restarts, is skipped too
    producer.cancel("later")
    wait_until(learned(worker, 3), 30, "the worker to learn the third cancellation")
    worker.stop()
    booking_workers("cancel-b")
    later = tally.apply_async((9, str(ran)), task_id="later")
    wait_until(lambda: state(later.id) == "REVOKED", 60, "the restarted worker to skip it")
    assert len(runs(ran)) == 1
    assert queue_depth(broker, names.BOOKING)[0] == 0

    # and cancelling again, or cancelling a finished task, changes nothing
    assert producer.cancel("later").state == "REVOKED"
    again = producer.cancel(queued[2].id)
    assert (again.state, again.cancelled) == ("SUCCESS", False)
    assert queued[2].get(timeout=5) == 2


def test_two_workers_skip_every_cancelled_task_and_run_every_other(
    pair: list[tuple[WorkerProcess, int]], tmp_path: Path
) -> None:
    # given two workers on the booking queue, and 20 of 40 task ids cancelled
    ids = [f"pair-{n}-{uuid.uuid4()}" for n in range(40)]
    for task_id in ids[::2]:
        assert producer.cancel(task_id).cancelled
    for worker, _ in pair:
        wait_until(learned(worker, 20), 30, "both workers to learn the cancellations")

    # when all 40 are published
    ran = tmp_path / "ran"
    results = [tally.apply_async((n, str(ran)), task_id=task_id) for n, task_id in enumerate(ids)]

    # then the 20 cancelled ones are REVOKED and never ran; the other 20 ran once each
    wait_until(lambda: all(r.ready() for r in results), 60, "every task to finish or be skipped")
    assert [state(task_id) for task_id in ids] == ["REVOKED", "SUCCESS"] * 20
    assert len(runs(ran)) == 20


def test_a_running_task_is_told_and_one_that_does_not_stop_is_terminated(
    pair: list[tuple[WorkerProcess, int]], tmp_path: Path
) -> None:
    # given workers that give a cancelled task 2 s, running a task that checks and one that does not
    counted = sum(revoked_count(port) for _, port in pair)
    told, deaf = tmp_path / "told", tmp_path / "deaf"
    checking = patient.delay(str(told), 60)
    ignoring = stubborn.delay(str(deaf), 60)
    wait_until(lambda: runs(told) == ["started"] and runs(deaf) == ["started"], 30, "both tasks to start")

    # when both are cancelled while running
    assert producer.cancel(checking.id).state == "PENDING"
    assert producer.cancel(ignoring.id).cancelled

    # then the one that checks stops by itself, the other is terminated after the grace period
    wait_until(lambda: state(checking.id) == "REVOKED", 30, "the checking task to stop")
    wait_until(lambda: state(ignoring.id) == "REVOKED", 30, "the ignoring task to be terminated")
    log = "".join(worker.log() for worker, _ in pair)
    assert f"tests.canvas.patient[{checking.id}] stopped: cancelled" in log
    assert f"tests.canvas.stubborn[{ignoring.id}] cancelled and still running: terminating it" in log
    assert f"tests.canvas.patient[{checking.id}] cancelled and still running" not in log
    assert runs(told) == runs(deaf) == ["started"]
    wait_until(
        lambda: sum(revoked_count(port) for _, port in pair) == counted + 2, 20, "both counted in the metrics"
    )

    # and the workers go on with the next task
    assert tally.delay(1, str(tmp_path / "next")).get(timeout=60) == 1


def test_the_command_line_cancels_and_shows_a_task(
    pair: list[tuple[WorkerProcess, int]], tmp_path: Path
) -> None:
    # given a running task on one of two named workers
    notes = tmp_path / "notes"
    running = patient.delay(str(notes), 60)
    wait_until(lambda: runs(notes) == ["started"], 30, "the task to start")

    # when it is shown, then cancelled, then shown again
    before = magnetiq("task", "show", running.id)
    cancelled = magnetiq("task", "cancel", running.id, "never-published")
    wait_until(lambda: state(running.id) == "REVOKED", 30, "the task to stop")
    after = magnetiq("task", "show", "--json", running.id)
    unknown = magnetiq("task", "show", "never-published")
    failed = fail.delay("boom")
    wait_until(failed.ready, 30, "the failing task")
    dead = magnetiq("task", "show", failed.id)

    # then each says what it did and where the task is
    assert before.returncode == 0, before.stderr
    assert "state:     PENDING" in before.stdout
    assert "where:     running on cancel-" in before.stdout
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"cancelled {running.id} (state PENDING): workers skip it; a running one is told" in (
        cancelled.stdout
    )
    assert "cancelled never-published (state PENDING)" in cancelled.stdout
    shown: dict[str, Any] = json.loads(after.stdout)
    assert (shown["state"], shown["where"]) == ("REVOKED", "finished")
    assert shown["cancelled"]
    assert "where:     in its queue, or never published" in unknown.stdout
    assert "cancelled: " in unknown.stdout
    assert "state:     FAILURE" in dead.stdout
    assert "result:    ValueError('boom')" in dead.stdout
    assert "where:     dead-lettered in booking.dlq (rejected, 1 death(s))" in dead.stdout


def test_a_worker_whose_database_is_away_consumes_and_keeps_asking_for_cancellations(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # given a booking worker started while its PostgreSQL is not there
    worker = start_worker(
        "booking",
        "--hostname",
        "cancel-nodb@%h",
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x",
    )
    try:
        # then it started consuming all the same, and its poll says what it does about it
        wait_until(lambda: "cancellations: poll failed (retrying every 5s)" in worker.log(), 30, "the poll")
        assert "cancellations not loaded (PostgreSQL unreachable?), polling for them" in worker.log()
    finally:
        worker.stop()  # a task it took now would fail on the missing database


def test_bad_task_ids_get_a_clear_error_and_cancel_nothing(database: Any) -> None:
    for bad in ("", "x" * 156):
        with pytest.raises(producer.InvalidTaskId, match="invalid task id"):
            producer.cancel(bad)
    with pytest.raises(producer.InvalidTaskId, match="non-empty string"):
        producer.cancel(42)  # type: ignore[arg-type]
    refused = magnetiq("task", "cancel", "x" * 156)
    assert refused.returncode == 2
    assert "invalid task id: 156 characters (at most 155)" in refused.stderr
    with database.connect() as db:
        assert db.exec_driver_sql("SELECT count(*) FROM task_cancellations").scalar() == 0
