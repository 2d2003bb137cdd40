"""Cancelled tasks: a row each in PostgreSQL, which every worker reads (``workers.cancels``).

Celery's own ``revoke`` lives in the memory of the workers that were up when
it was broadcast (or in a ``--statedb`` file a read-only root cannot keep): a
worker started later runs the task. A cancellation here is a row in
``task_cancellations``. A worker loads the rows at start and polls for new ones
every second; it skips a cancelled task when the message reaches it and records
REVOKED, and tells a running one (``FleetTask.stop_if_cancelled``), then
terminates it after a grace period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text

from app.db import engine_for
from app.settings import get_settings

#: The longest task id Celery's result columns hold.
MAX_TASK_ID = 155
#: Cancellations a worker reads per query (``cancelled_since``); it reads on while a batch is full.
BATCH = 1000
#: Cancellations are serialised, so their ``seq`` commits in order and a
#: worker's poll for ``seq > last`` never passes one that commits later.
_LOCK = "LOCK TABLE task_cancellations IN SHARE ROW EXCLUSIVE MODE"
_INSERT = """
INSERT INTO task_cancellations (task_id)
SELECT :task_id WHERE NOT EXISTS (
    SELECT 1 FROM task_results
    WHERE task_id = :task_id AND status IN ('SUCCESS', 'FAILURE', 'REVOKED')
)
ON CONFLICT (task_id) DO NOTHING
"""
_STATE = """
SELECT r.status, c.cancelled_at
FROM (SELECT :task_id AS task_id) AS t
LEFT JOIN task_results r ON r.task_id = t.task_id
LEFT JOIN task_cancellations c ON c.task_id = t.task_id
"""
#: The cancellations after ``seq``, or all of them if the table's ``seq`` went back
#: below it (a restored or truncated table): a worker never waits for numbers it passed.
_SINCE = """
SELECT seq, task_id, EXTRACT(EPOCH FROM now() - cancelled_at)::float8
FROM task_cancellations
WHERE (seq > :seq OR :seq > (SELECT COALESCE(max(seq), 0) FROM task_cancellations))
  AND cancelled_at > now() - make_interval(secs => :horizon)
ORDER BY seq LIMIT :limit
"""
_CANCELLED_AT = "SELECT cancelled_at FROM task_cancellations WHERE task_id = :task_id"


class InvalidTaskId(ValueError):
    """A task id no task can have (empty, not a string, or too long)."""


@dataclass(frozen=True)
class Cancellation:
    """What ``cancel`` did to one task."""

    task_id: str
    #: The task's state as stored when it was cancelled (PENDING: no result yet).
    state: str
    #: When it was first cancelled; None if it had already finished (nothing to cancel).
    cancelled_at: datetime | None

    @property
    def cancelled(self) -> bool:
        """True unless the task had already finished."""
        return self.cancelled_at is not None


def check_task_id(task_id: object) -> str:
    """Return ``task_id`` if a task can have it.

    Raises:
        InvalidTaskId: naming what is wrong with it.
    """
    if not isinstance(task_id, str) or not task_id.strip():
        raise InvalidTaskId(f"invalid task id {task_id!r}: expected a non-empty string")
    if len(task_id) > MAX_TASK_ID:
        raise InvalidTaskId(f"invalid task id: {len(task_id)} characters (at most {MAX_TASK_ID})")
    return task_id


def _engine(engine: Engine | None) -> Engine:
    return engine or engine_for(get_settings().database_url)


def cancel(task_id: str, engine: Engine | None = None) -> Cancellation:
    """Cancel a task for good: a worker that receives it later, on any replica, skips it.

    Cancelling twice is harmless (the first time is kept); a task that has
    already finished is left as it is. A running task is told and, if it has
    not returned within ``CANCEL_GRACE_SECONDS``, terminated.

    Raises:
        InvalidTaskId: ``task_id`` is not one a task can have.
        sqlalchemy.exc.OperationalError: PostgreSQL is unreachable (nothing was cancelled).
    """
    check_task_id(task_id)
    with _engine(engine).begin() as connection:
        connection.execute(text(_LOCK))
        connection.execute(text(_INSERT), {"task_id": task_id})
        status, cancelled_at = connection.execute(text(_STATE), {"task_id": task_id}).one()
    return Cancellation(task_id, status or "PENDING", cancelled_at)


def cancelled_at(task_id: str, engine: Engine | None = None) -> datetime | None:
    """When ``task_id`` was cancelled, or None."""
    with _engine(engine).connect() as connection:
        found: datetime | None = connection.execute(text(_CANCELLED_AT), {"task_id": task_id}).scalar()
        return found


def cancelled_since(
    seq: int, horizon: float, limit: int = BATCH, engine: Engine | None = None
) -> list[tuple[int, str, float]]:
    """Cancellations after ``seq`` and younger than ``horizon`` seconds: (seq, task id, age in seconds)."""
    with _engine(engine).connect() as connection:
        rows = connection.execute(text(_SINCE), {"seq": seq, "horizon": horizon, "limit": limit})
        return [(int(s), str(t), float(age)) for s, t, age in rows]
