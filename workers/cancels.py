"""Cancellations reach every worker: loaded at start, polled every second, skipped on arrival.

A cancelled task's id goes into Celery's own revoked set
(``celery.worker.state.revoked``), which the worker checks when a message
arrives and again before the pool runs it: the task is skipped, its result
recorded REVOKED and its message acked. The set is filled from PostgreSQL
(``app.cancellations``), not from a broadcast, so it survives restarts and
reaches replicas that were not up when the task was cancelled. A task already
running when its cancellation arrives is told (``FleetTask.stop_if_cancelled``)
and terminated after ``CANCEL_GRACE_SECONDS`` if it is still running.

The poll runs on a thread of its own (a greenlet under gevent), so a database
outage never stalls the worker's loop; the loop applies what it found.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from celery import bootsteps
from celery.worker import state
from sqlalchemy.exc import SQLAlchemyError

from app import cancellations
from app.settings import get_settings

log = logging.getLogger(__name__)

#: Seconds between polls for new cancellations.
POLL_SECONDS = 1.0
#: Seconds between polls while PostgreSQL is unreachable.
RETRY_SECONDS = 5.0
#: Cancelled ids a worker remembers; past that the oldest are forgotten first.
REMEMBERED = 100_000


class Cancels(bootsteps.StartStopStep):
    """Consumer step: keep the worker's revoked set in step with ``task_cancellations``."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        settings = get_settings()
        #: Cancellations are kept as long as results: a message may wait that long (a DLQ replay).
        self.horizon = float(settings.result_expires)
        self.grace = settings.cancel_grace_seconds
        self.found: collections.deque[tuple[int, str, float]] = collections.deque()
        self.seq = 0
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.entry: Any = None

    def start(self, consumer: Any) -> None:
        """Load the cancellations before the first message is handled; then poll for new ones."""
        if self.thread is None:  # the consumer restarts its steps on every reconnect
            state.revoked.maxlen = max(state.revoked.maxlen, REMEMBERED)
            state.revoked.expires = max(state.revoked.expires, self.horizon)
            try:
                self._poll()  # here, in the loop's thread: it creates the engine, never the thread (app.db)
            except SQLAlchemyError as exc:
                log.error("cancellations not loaded (PostgreSQL unreachable?), polling for them: %s", exc)
            self._apply(consumer)
            self.thread = threading.Thread(target=self._keep_polling, name="cancellations", daemon=True)
            self.thread.start()
        self.entry = consumer.timer.call_repeatedly(POLL_SECONDS / 4, self._apply, (consumer,), priority=5)

    def stop(self, consumer: Any) -> None:
        """Connection lost: stop applying until the consumer starts again (the poll goes on)."""
        if self.entry is not None:
            self.entry.cancel()
            self.entry = None

    def shutdown(self, consumer: Any) -> None:
        """Worker stopping: stop the poll too."""
        self.stop(consumer)
        self.stopping.set()

    def _poll(self) -> None:
        while rows := cancellations.cancelled_since(self.seq, self.horizon):
            self.found.extend(rows)
            self.seq = rows[-1][0]
            if len(rows) < cancellations.BATCH:
                return

    def _keep_polling(self) -> None:
        failing = False
        while not self.stopping.wait(RETRY_SECONDS if failing else POLL_SECONDS):
            try:
                self._poll()
            except SQLAlchemyError as exc:
                if not failing:
                    log.warning("cancellations: poll failed (retrying every %.0fs): %s", RETRY_SECONDS, exc)
                failing = True
                continue
            if failing:
                log.info("cancellations: polling again")
            failing = False

    def _apply(self, consumer: Any) -> None:
        now, new, last = time.monotonic(), 0, 0
        while self.found:
            last, task_id, age = self.found.popleft()
            new += 1
            state.revoked.add(task_id, now - age)
            request = _unfinished(task_id)
            if request is None:
                continue
            log.warning(
                "task %s[%s] cancelled while on this worker: told to stop, terminated in %.0fs if it runs on",
                request.name,
                task_id,
                self.grace,
            )
            consumer.timer.call_after(self.grace, self._terminate, (consumer, task_id))
        if new:
            log.info("cancellations: %d new, up to #%d", new, last)

    def _terminate(self, consumer: Any, task_id: str) -> None:
        request = _unfinished(task_id)
        if request is None:
            return
        log.warning("task %s[%s] cancelled and still running: terminating it", request.name, task_id)
        request.terminate(consumer.pool, signal="SIGTERM")


def _unfinished(task_id: str) -> Any:
    """This worker's request for ``task_id`` while it is not done (its message not acked yet), else None."""
    request = state.requests.get(task_id)
    return None if request is None or request.acknowledged else request
