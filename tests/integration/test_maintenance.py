"""Session cleanup on real tables, directly and through a real maintenance worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from app.maintenance.service import cleanup_old_sessions
from app.tasks.maintenance import cleanup_old_sessions as cleanup_task
from tests.integration.conftest import WorkerProcess


def _sessions(database: Any, old: int, fresh: int) -> None:
    with database.begin() as db:
        for i in range(old):
            db.execute(
                text(
                    "INSERT INTO sessions (id, user_id, created_at) "
                    "VALUES (:id, 1, now() - interval '8 days')"
                ),
                {"id": f"old-{i}"},
            )
        for i in range(fresh):
            db.execute(
                text(
                    "INSERT INTO sessions (id, user_id, created_at) "
                    "VALUES (:id, 1, now() - interval '6 days')"
                ),
                {"id": f"new-{i}"},
            )


def _left(database: Any) -> list[str]:
    with database.connect() as db:
        return sorted(db.execute(text("SELECT id FROM sessions")).scalars())


def test_service_deletes_only_sessions_older_than_seven_days(database: Any) -> None:
    _sessions(database, old=3, fresh=2)
    assert cleanup_old_sessions(database) == 3
    assert _left(database) == ["new-0", "new-1"]


def test_task_on_the_maintenance_worker(start_worker: Callable[..., WorkerProcess], database: Any) -> None:
    start_worker("maintenance")
    _sessions(database, old=4, fresh=1)
    assert cleanup_task.delay().get(timeout=30) == "Cleaned up 4 expired sessions"
    assert cleanup_task.delay().get(timeout=30) == "Cleaned up 0 expired sessions"
    assert _left(database) == ["new-0"]
