"""Waiting for results: LISTEN/NOTIFY wake-ups with a polling backstop, one query per round."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

import psycopg2
from celery import states
from celery.exceptions import TimeoutError
from sqlalchemy.engine import make_url

from app.result_backend.connection import SqlBackend
from app.result_backend.statements import CHANNEL, WAIT_LOCK

log = logging.getLogger(__name__)
#: Keys in one order (every waiter's), so two waiters never deadlock on each other.
_LOCK_WAITERS = """
SELECT count(pg_advisory_xact_lock(%s, key)) FROM (
    SELECT DISTINCT hashtext(task_id) AS key FROM unnest(%s::text[]) AS task_id ORDER BY key
) AS keys
"""
_REGISTER = (
    "INSERT INTO result_waiters (task_id, waiter) SELECT unnest(%s::text[]), %s ON CONFLICT DO NOTHING"
)
#: Task ids registered per transaction: each holds one lock per id until it commits,
#: and the server's lock table is shared (``max_locks_per_transaction``).
REGISTER_BATCH = 256
#: Seconds a new listener waits for its own probe notification before it gives up on NOTIFY.
PROBE_SECONDS = 2.0
_SELECT_MANY = """
SELECT task_id, status, result::text, traceback, children::text, date_done,
       task_name, args::text, kwargs::text, worker, retries, queue
FROM task_results WHERE task_id = ANY(%s) AND status = ANY(%s)
"""


class Listener:
    """One thread's LISTEN connection: a wait registers its task ids, then sleeps until one is stored.

    The store announces a result on ``CHANNEL`` in the transaction that stores
    it, only when a ``result_waiters`` row names it, so results nobody waits
    for cost no notification.
    """

    def __init__(self, url: str) -> None:
        args = make_url(url).translate_connect_args(username="user", database="dbname")
        self.pid = os.getpid()
        self.waiter = uuid.uuid4().hex
        self.connection = psycopg2.connect(
            **args, connect_timeout=5, application_name=f"magnetiq-results-{self.pid}"
        )
        self.connection.autocommit = True
        #: Waits this listener ended because a result they waited for was announced.
        self.wakeups = 0
        with self.connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")

    def wait(self, task_ids: Collection[str], seconds: float) -> bool:
        """Sleep until one of ``task_ids`` is announced or ``seconds`` pass; return whether one was."""
        deadline = time.monotonic() + seconds
        while True:
            self.connection.poll()
            announced = [note.payload for note in self.connection.notifies]
            self.connection.notifies.clear()
            if any(payload in task_ids for payload in announced):
                self.wakeups += 1
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            select.select([self.connection], [], [], remaining)

    def close(self) -> None:
        """Close the connection (only in the process that opened it)."""
        if self.pid == os.getpid():
            self.connection.close()


class _Wait:
    """One wait's registration with this thread's listener, made at its first sleep.

    A result that is already stored costs no registration. The first sleep
    registers the task ids and returns at once, so the caller reads the state
    again before it really sleeps: a result stored before the registration is
    seen by that read, one stored after it is announced.
    """

    def __init__(self, backend: WaitingBackend, task_ids: list[str]) -> None:
        self.backend = backend
        self.task_ids = task_ids
        self.listener: Listener | None = None
        self.registered = False
        self.polling = False

    def sleep(self, pending: Collection[str], seconds: float) -> None:
        """Sleep ``seconds`` or until one of ``pending`` is announced (the first call registers instead)."""
        if not self.registered and not self.polling:
            self.listener = self.backend.listener()
            try:
                if self.listener is not None:
                    self.backend.register_waiter(self.task_ids, self.listener.waiter)
                    self.registered = True
                    return
            except psycopg2.Error:
                self._lost()
            self.polling = True
        if self.listener is None or self.polling:
            time.sleep(seconds)
            return
        try:
            self.listener.wait(pending, seconds)
        except psycopg2.Error:
            self._lost()
            time.sleep(seconds)

    def close(self) -> None:
        """End the registration, if one was made."""
        if self.registered and self.listener is not None:
            try:
                self.backend.unregister_waiter(self.task_ids, self.listener.waiter)
            except psycopg2.Error:
                self._lost()

    def _lost(self) -> None:
        # The listener's connection failed: drop it (a new one next time); this wait polls.
        if self.listener is not None:
            self.backend.drop_listener(self.listener)
        self.listener, self.polling = None, True


#: Listeners a forked child inherited: kept referenced, never closed (the socket is the parent's).
_inherited_listeners: list[Listener] = []


class WaitingBackend(SqlBackend):
    """``AsyncResult.get()``, ``GroupResult.get()`` and chord joins, woken by NOTIFY where it reaches them."""

    _cache: Any  # Celery's cache of ready results, by task id

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: None until the first wait checks that NOTIFY reaches this process; then True or False.
        self.notify_works: bool | None = None
        self._listeners = threading.local()

    def listener(self) -> Listener | None:
        """This thread's listener, or None where NOTIFY cannot reach it (waits then poll)."""
        if self.notify_works is False:
            return None
        current: Listener | None = getattr(self._listeners, "current", None)
        if current is not None and current.pid != os.getpid():
            _inherited_listeners.append(current)  # a forked child: never touch the parent's socket
            current = None
        if current is None:
            try:
                current = Listener(self.url)
            except psycopg2.Error as exc:
                log.warning("result waits poll: no LISTEN connection (%s)", exc)
                return None
            if self.notify_works is None:
                self.notify_works = self._probe(current)
                if not self.notify_works:
                    current.close()
                    return None
            self._listeners.current = current
        return current

    def _probe(self, listener: Listener) -> bool:
        """Announce a probe from a pooled connection; True if the listener hears it in time."""
        probe = f"probe:{listener.waiter}"
        self._execute("SELECT pg_notify(%s, %s)", (CHANNEL, probe))
        if listener.wait({probe}, PROBE_SECONDS):
            return True
        log.warning(
            "result waits poll every interval: NOTIFY on %s does not reach this process "
            "(a pooler in transaction mode?); point CELERY_RESULT_BACKEND at the server or a session pooler",
            CHANNEL,
        )
        return False

    def register_waiter(self, task_ids: Collection[str], waiter: str) -> None:
        """Ask the store to announce these tasks' results to ``waiter`` (a LISTEN connection's id).

        A wait registers before it reads the state again, so a result stored
        before the registration is seen by that read and one stored after it is
        announced; ``WAIT_LOCK`` orders a store that runs during the registration.
        """
        ids = sorted(set(task_ids))
        for start in range(0, len(ids), REGISTER_BATCH):
            batch = ids[start : start + REGISTER_BATCH]
            self._execute(_REGISTER, (batch, waiter), riders=[(_LOCK_WAITERS, (WAIT_LOCK, batch))])

    def unregister_waiter(self, task_ids: Collection[str], waiter: str) -> None:
        """End ``waiter``'s registration for these tasks."""
        self._execute(
            "DELETE FROM result_waiters WHERE waiter = %s AND task_id = ANY(%s)", (waiter, list(task_ids))
        )

    def drop_listener(self, listener: Listener) -> None:
        """Forget this thread's listener and close it (its connection failed)."""
        self._listeners.current = None
        with contextlib.suppress(psycopg2.Error):
            listener.close()

    @contextlib.contextmanager
    def _waiting(self, task_ids: Collection[str]) -> Iterator[_Wait]:
        """A wait for ``task_ids`` for the block; its registration, if made, ends with it."""
        wait = _Wait(self, list(task_ids))
        try:
            yield wait
        finally:
            wait.close()

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_interval: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Wait for ``task_id``'s result: woken by its NOTIFY, with a read every ``interval`` as a backstop.

        Raises:
            celery.exceptions.TimeoutError: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._waiting([task_id]) as wait:
            while True:
                meta: dict[str, Any] = self.get_task_meta(task_id)
                if meta["status"] in states.READY_STATES:
                    return meta
                if on_interval is not None:
                    on_interval()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("The operation timed out.")
                wait.sleep((task_id,), interval if remaining is None else min(interval, remaining))

    def get_many(
        self,
        task_ids: Iterable[str],
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        on_interval: Callable[[], None] | None = None,
        max_iterations: int | None = None,
        READY_STATES: frozenset[str] = states.READY_STATES,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``(task_id, meta)`` for each task as it is ready: one query per round for all still waiting.

        Raises:
            celery.exceptions.TimeoutError: ``timeout`` seconds passed with tasks still waiting.
        """
        waiting = set(task_ids)
        for task_id in list(waiting):
            cached = self._cache.get(task_id)
            if cached is not None and cached["status"] in READY_STATES:
                waiting.discard(task_id)
                yield task_id, cached
        if waiting:
            with self._waiting(sorted(waiting)) as wait:
                yield from self._collect(
                    waiting,
                    wait,
                    timeout,
                    interval,
                    on_message,
                    on_interval,
                    max_iterations,
                    READY_STATES,
                )

    def _collect(
        self,
        waiting: set[str],
        wait: _Wait,
        timeout: float | None,
        interval: float,
        on_message: Callable[[dict[str, Any]], None] | None,
        on_interval: Callable[[], None] | None,
        max_iterations: int | None,
        READY_STATES: frozenset[str],
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        rounds = 0
        while waiting:
            rows = self._execute(_SELECT_MANY, (sorted(waiting), sorted(READY_STATES)), fetch="all")
            for task_id, *row in rows:
                meta = self._meta(task_id, row)
                self._cache[task_id] = meta
                waiting.discard(task_id)
                if on_message is not None:
                    on_message(meta)
                yield task_id, meta
            rounds += 1
            if not waiting or (max_iterations is not None and rounds >= max_iterations):
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Operation timed out ({timeout})")
            if on_interval is not None:
                on_interval()
            nap = interval if deadline is None else min(interval, max(0.0, deadline - time.monotonic()))
            wait.sleep(waiting, nap)
