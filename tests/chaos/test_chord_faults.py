"""A chord whose worker is killed -9 between a header task's stored result and its count."""

from __future__ import annotations

from pathlib import Path

from celery import chord
from sqlalchemy import text

from app.celery_app import celery_app
from tests.chaos.harness import Chaos
from tests.support.canvas_tasks import INCLUDE, add, tally
from tests.support.waiting import wait_until

HEADER = 8


def test_kill_9_between_a_header_result_and_its_count(chaos: Chaos, tmp_path: Path) -> None:
    worker = chaos.start_worker("booking", "--concurrency", "2", *INCLUDE)
    body_runs = tmp_path / "body"

    # given a chord whose header starts in 2 s, and its counter row locked by this test, so every
    # header task that finishes stores its result and then waits, before it is counted
    result = chord(add.s(i, i) for i in range(HEADER))(tally.s(str(body_runs)), countdown=2)
    group_id = result.parent.id
    with chaos.engine.connect() as locker:
        lock = locker.begin()
        locker.execute(text("SELECT 1 FROM chord_counters WHERE group_id = :g FOR UPDATE"), {"g": group_id})

        def blocked() -> bool:
            with chaos.engine.connect() as db:
                stored = db.execute(
                    text(
                        "SELECT count(*) FROM task_results WHERE task_id = ANY(:ids) AND status = 'SUCCESS'"
                    ),
                    {"ids": [r.id for r in result.parent.results]},
                ).scalar_one()
                waiting = db.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                ).scalar_one()
            return stored >= 2 and waiting >= 2

        wait_until(blocked, 60, "two header tasks stored and waiting to be counted")

        # when the worker is killed -9 in that window, and the lock is released
        worker.kill()
        lock.rollback()

    # then a new worker counts the redelivered tasks once and the body runs once, with every result
    chaos.start_worker("booking", "--concurrency", "2", *INCLUDE)
    body = celery_app.AsyncResult(result.id)
    wait_until(body.ready, 120, "the chord body")
    assert body.get(timeout=5) == [2 * i for i in range(HEADER)]
    assert len(body_runs.read_text().splitlines()) == 1
    with chaos.engine.connect() as db:
        done, size, fired = db.execute(
            text("SELECT done, size, fired_at IS NOT NULL FROM chord_counters WHERE group_id = :g"),
            {"g": group_id},
        ).one()
        parts = db.execute(
            text("SELECT count(*) FROM chord_parts WHERE group_id = :g"), {"g": group_id}
        ).scalar_one()
    assert (done, size, fired, parts) == (HEADER, HEADER, True, HEADER)
    print(f"\nchord kill -9 between result and count: header {HEADER}, lost 0, body runs 1")
