"""The PostgreSQL result backend Celery loads: task states, groups, and the pieces it is built from."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import states
from celery.result import GroupResult, result_from_tuple
from kombu.utils.json import dumps
from psycopg2 import DatabaseError

from app import contracts
from app.result_backend.chords import ChordBackend
from app.result_backend.connection import load
from app.result_backend.expiry import ExpiringBackend
from app.result_backend.riders import RidingBackend, reruns, riders
from app.result_backend.statements import LOCK_STORE, SELECT, STORE, WAIT_LOCK
from app.result_backend.waits import WaitingBackend

log = logging.getLogger(__name__)
_SAVE_GROUP = """
INSERT INTO group_results (group_id, result, date_done) VALUES (%s, %s, %s)
ON CONFLICT (group_id) DO UPDATE SET result = EXCLUDED.result, date_done = EXCLUDED.date_done
"""


class PostgresBackend(RidingBackend, WaitingBackend, ChordBackend, ExpiringBackend):
    """Result backend storing task state in the ``task_results`` table."""

    #: ``GroupResult.get()`` and chords collect a group with ``get_many``: one query per round.
    supports_native_join = True

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        children = self.current_task_children(request)
        bound = riders.get(task_id, ())
        row = (
            task_id,
            state,
            getattr(request, "task", None),
            dumps(result),
            traceback,
            dumps(children) if children else None,
            datetime.now(UTC) if state in self.READY_STATES else None,
            *self._extended(request),
        )
        lock = [(LOCK_STORE, (WAIT_LOCK, task_id))] if state in self.READY_STATES else []
        try:
            self._execute(STORE, row, riders=[*lock, *bound])
        except self.RETRYABLE:
            raise  # kept until stored: a retried store carries them again
        except DatabaseError as exc:
            if not bound:
                raise
            # Refused: record the task's state alone, so its outcome is known
            # and Celery's trace goes on to task_postrun, which runs the riders
            # again and, if they are refused there too, publishes the rerun.
            log.warning("task %s: %d statement(s) bound to its result refused: %s", task_id, len(bound), exc)
            self._execute(STORE, row, riders=lock)
            return result
        if bound:
            riders.pop(task_id, None)
            reruns.pop(task_id, None)
        return result

    def _extended(self, request: Any) -> tuple[Any, ...]:
        """An extended result's args, kwargs, worker, retries, queue (all None unless ``result_extended``)."""
        if not self.app.conf.result_extended or request is None:
            return (None,) * 5
        name = getattr(request, "task", None) or ""
        args, kwargs = getattr(request, "args", None), getattr(request, "kwargs", None)
        kwargs = contracts.redacted(name, kwargs) if kwargs else kwargs
        if args and contracts.has_secrets(name):
            args = [contracts.REDACTED] * len(args)  # positional: which one is secret is the task's business
        delivery = getattr(request, "delivery_info", None) or {}
        return (
            dumps(args) if args is not None else None,
            dumps(kwargs) if kwargs is not None else None,
            getattr(request, "hostname", None),
            getattr(request, "retries", None),
            delivery.get("routing_key"),
        )

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        row = self._execute(SELECT, (task_id,), fetch=True)
        if row is None:
            return {
                "task_id": task_id,
                "status": states.PENDING,
                "result": None,
                "traceback": None,
                "children": [],
                "date_done": None,
            }
        return self._meta(task_id, row)

    def _forget(self, task_id: str) -> None:
        self._execute("DELETE FROM task_results WHERE task_id = %s", (task_id,))

    # -- groups ----------------------------------------------------------
    def _save_group(self, group_id: str, result: GroupResult) -> GroupResult:
        self._execute(_SAVE_GROUP, (group_id, dumps(result.as_tuple()), datetime.now(UTC)))
        return result

    def _restore_group(self, group_id: str) -> dict[str, Any] | None:
        row = self._execute(
            "SELECT result::text, date_done FROM group_results WHERE group_id = %s", (group_id,), fetch=True
        )
        if row is None:
            return None
        return {
            "group_id": group_id,
            "result": result_from_tuple(load(row[0]), self.app),
            "date_done": row[1],
        }

    def _delete_group(self, group_id: str) -> None:
        self._execute("DELETE FROM group_results WHERE group_id = %s", (group_id,))
