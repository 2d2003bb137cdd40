"""Writes that ride in the transaction storing a result, and the rerun when the database refuses them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from celery import signals

from app.result_backend.connection import SqlBackend

#: Statements waiting for the transaction that stores a task's next state, by task id.
riders: dict[str, list[tuple[str, Any]]] = {}
#: Headers of the rerun that finishes a task's riders should the database refuse them, by task id.
reruns: dict[str, dict[str, Any]] = {}
#: Seconds before such a rerun (native delayed delivery takes whole seconds).
RERUN_COUNTDOWN = 5
log = logging.getLogger(__name__)


class RidingBackend(SqlBackend):
    """``commit_with_result``: a write committed with the task's next stored state, or on its own."""

    def commit_with_result(
        self, task_id: str, sql: str, params: Any, rerun_headers: Mapping[str, Any] | None = None
    ) -> None:
        """Run ``sql`` in the transaction (and round trip) that stores ``task_id``'s next state.

        For a write that belongs with the task's outcome and must be committed
        before its message is acked. The caller must know that a state will be
        stored (results not ignored); should none be, or should the database
        refuse the statement there, ``task_postrun`` runs it on its own, still
        before the ack. If the database refuses it then too, the task is
        published again, with ``rerun_headers`` (which tell the rerun what it
        owes), before its message is acked.
        """
        riders.setdefault(task_id, []).append((sql, params))
        if rerun_headers:
            reruns.setdefault(task_id, {}).update(rerun_headers)

    def flush_riders(self, task_id: str) -> None:
        """Run the statements still waiting for ``task_id``'s state, in one round trip."""
        waiting = riders.pop(task_id, None)
        reruns.pop(task_id, None)
        if waiting:
            (sql, params), before = waiting[-1], waiting[:-1]
            self._execute(sql, params, riders=before)


@signals.task_postrun.connect(weak=False)
def _flush_riders(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    # The end of the trace, before the ack: what no stored state took runs on its own.
    waiting = len(riders.get(task_id or "", ()))
    if not task_id or not waiting:
        return
    rerun_headers = reruns.get(task_id)
    try:
        task.backend.flush_riders(task_id)
    except Exception as exc:
        riders.pop(task_id, None)
        reruns.pop(task_id, None)
        _rerun(task, task_id, waiting, rerun_headers, exc)


def _rerun(task: Any, task_id: str, waiting: int, headers: Mapping[str, Any] | None, exc: Exception) -> None:
    """Publish the running task again, with ``headers``, to finish what the database refused.

    Signal handlers cannot stop the ack of the message that follows, so the
    work that must not be lost goes out in a new message first: a requeued
    original would not know what its first run had done (an email sent).
    """
    request = task.request
    if not headers or request.id != task_id:  # nothing to tell a rerun, or no running request to rerun
        log.error("task %s: %d statement(s) bound to its result not committed: %s", task_id, waiting, exc)
        return
    # The request's headers as Celery's own retry passes them on (without RabbitMQ's death headers).
    merged = {**request.as_execution_options()["headers"], **headers}
    try:
        task.signature_from_request(request, countdown=RERUN_COUNTDOWN, headers=merged).apply_async()
    except Exception as publish_exc:
        log.critical(
            "task %s: %d statement(s) bound to its result not committed (%s); rerun not published: %s",
            task_id,
            waiting,
            exc,
            publish_exc,
        )
        return
    log.error(
        "task %s: %d statement(s) bound to its result refused (%s); rerun in %d s to finish them",
        task_id,
        waiting,
        exc,
        RERUN_COUNTDOWN,
    )
