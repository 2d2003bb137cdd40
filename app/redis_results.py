"""Celery's Redis result backend, for the seed's ``CELERY_RESULT_BACKEND=redis://``.

PostgreSQL (``app.result_backend``) stays the default and the recommended
backend. With results in Redis:

- each result is a JSON key that expires after ``RESULT_EXPIRES``, or after
  its task's own ``result_expires`` (``FleetTask``), set in the same ``SETEX``
  that stores it; a failure keeps Celery's ``result_expires`` rule too;
- chords join with Celery's own Redis counters;
- ``app.producer.aio.wait_result`` reads every ``interval`` (no ``NOTIFY``);
- the mail ledger's ``sent`` mark is committed on its own, just before the
  result, as when results live in another database;
- ``magnetiq capacity`` cannot measure from result rows: give it ``--per-worker``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from celery.backends.redis import RedisBackend

#: The expiry of the result being stored now, when its task has its own (per greenlet and thread).
_task_expires: ContextVar[int | None] = ContextVar("task_result_expires", default=None)


class RedisResults(RedisBackend):
    """Celery's ``RedisBackend``, except that a task's own ``result_expires`` is its key's TTL."""

    def _store_result(
        self, task_id: str, result: Any, state: str, traceback: Any = None, request: Any = None, **kwargs: Any
    ) -> Any:
        task = self.app.tasks.get(getattr(request, "task", None) or "")  # type: ignore[attr-defined]
        token = _task_expires.set(getattr(task, "result_expires", None))
        try:
            return super()._store_result(  # type: ignore[misc]  # celery's, pinned
                task_id, result, state, traceback, request, **kwargs
            )
        finally:
            _task_expires.reset(token)

    def _set_with_state(self, key: str, value: Any, state: str) -> Any:
        expires = _task_expires.get()
        if expires is None:
            return super()._set_with_state(key, value, state)  # type: ignore[misc]  # celery's, pinned
        return self.set(key, value, expires=expires)  # type: ignore[call-arg]  # RedisBackend.set takes it

    def cleanup(self) -> int:  # type: ignore[override]
        """Nothing to delete: Redis expires each result key itself. Returns 0 (rows deleted)."""
        return 0
