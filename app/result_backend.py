"""Celery result backend on PostgreSQL: pooled, one upsert per state change, JSON rows.

Celery's stock ``DatabaseBackend`` opens a connection per stored result outside
forked children, builds a backend per greenlet under gevent, and locks the row
before each write. This backend keeps Celery's result API (``AsyncResult``,
groups, chords) and stores each state change with a single ``INSERT ... ON
CONFLICT DO UPDATE`` whose ``WHERE`` clause keeps a finished result from being
overwritten by a late duplicate.

Chords are native: no ``chord_unlock`` task polls for them. A chord gets a
counter row before its header is published; each header task, as it finishes,
counts itself once (a redelivered task is not counted again) under the row's
lock, and the one that completes the header joins the results (one query) and
publishes the body, marking the chord fired in the same transaction. A write that
belongs with a task's outcome (the mail ledger's "sent" mark) can ride in the
same round trip and transaction (``commit_with_result``); one the database
refuses is never dropped: the task is published again to finish it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import select
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg2
from celery import signals, states
from celery.backends.base import BaseBackend
from celery.canvas import Signature, maybe_signature
from celery.exceptions import ChordError, TimeoutError
from celery.result import GroupResult, allow_join_result, result_from_tuple
from kombu.utils.json import dumps, loads
from psycopg2 import DatabaseError, InterfaceError, OperationalError
from sqlalchemy.engine import make_url

from app import contracts
from app.db import engine_for
from app.settings import sqlalchemy_url

#: Server-side prepared statements, created once per connection: planning the
#: upsert costs about a quarter of its time. (Behind PgBouncer in transaction
#: mode this needs PgBouncer >= 1.21 with max_prepared_statements set.)
_PREPARE = {
    "magnetiq_store_result": """
PREPARE magnetiq_store_result (
    text, text, text, jsonb, text, jsonb, timestamptz, jsonb, jsonb, text, integer, text
) AS
WITH stored AS (
    INSERT INTO task_results (
        task_id, status, task_name, result, traceback, children, date_done,
        args, kwargs, worker, retries, queue
    )
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
    ON CONFLICT (task_id) DO UPDATE SET
        status = EXCLUDED.status,
        task_name = COALESCE(EXCLUDED.task_name, task_results.task_name),
        result = EXCLUDED.result,
        traceback = EXCLUDED.traceback,
        children = EXCLUDED.children,
        date_done = EXCLUDED.date_done,
        args = COALESCE(EXCLUDED.args, task_results.args),
        kwargs = COALESCE(EXCLUDED.kwargs, task_results.kwargs),
        worker = COALESCE(EXCLUDED.worker, task_results.worker),
        retries = COALESCE(EXCLUDED.retries, task_results.retries),
        queue = COALESCE(EXCLUDED.queue, task_results.queue)
    WHERE task_results.status <> 'SUCCESS'
      AND (EXCLUDED.status IN ('SUCCESS', 'FAILURE', 'REVOKED')
           OR task_results.status NOT IN ('FAILURE', 'REVOKED'))
    RETURNING task_id, status
)
SELECT pg_notify('magnetiq_results', stored.task_id) FROM stored
WHERE stored.status IN ('SUCCESS', 'FAILURE', 'REVOKED')
  AND EXISTS (SELECT 1 FROM result_waiters w WHERE w.task_id = stored.task_id)
""",
    "magnetiq_get_result": """
PREPARE magnetiq_get_result (text) AS
SELECT status, result::text, traceback, children::text, date_done,
       task_name, args::text, kwargs::text, worker, retries, queue
FROM task_results WHERE task_id = $1
""",
}
_UPSERT = "EXECUTE magnetiq_store_result (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
#: The channel a stored result is announced on, when someone waits for it (``result_waiters``).
CHANNEL = "magnetiq_results"
#: Advisory-lock class of result waits. A ready state's store takes it shared on
#: its task id before the statement that stores it (so that statement's snapshot
#: is taken after the lock); a waiter's registration takes it exclusive. So either
#: the registration commits first and the store sees its ``result_waiters`` row,
#: or the store commits first and the waiter's next read sees the result.
WAIT_LOCK = 0x6D67
_LOCK_STORE = "SELECT pg_advisory_xact_lock_shared(%s, hashtext(%s))"
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
_CREATE_CHORD = (
    "INSERT INTO chord_counters (group_id, size) VALUES (%s, %s) ON CONFLICT (group_id) DO NOTHING"
)
#: Statements of one header task's return, in one transaction: lock the chord,
#: count the task once, read the count, claim the body if the header is complete.
_LOCK_CHORD = "SELECT size, fired_at IS NOT NULL FROM chord_counters WHERE group_id = %s FOR UPDATE"
_COUNT_PART = "INSERT INTO chord_parts (group_id, task_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"
_BUMP_CHORD = "UPDATE chord_counters SET done = done + %s, size = %s WHERE group_id = %s RETURNING done"
_FIRE_CHORD = "UPDATE chord_counters SET fired_at = now() WHERE group_id = %s"
_SELECT = "EXECUTE magnetiq_get_result (%s)"
_SAVE_GROUP = """
INSERT INTO group_results (group_id, result, date_done) VALUES (%s, %s, %s)
ON CONFLICT (group_id) DO UPDATE SET result = EXCLUDED.result, date_done = EXCLUDED.date_done
"""
#: Statements waiting for the transaction that stores a task's next state, by task id.
_riders: dict[str, list[tuple[str, Any]]] = {}
#: Headers of the rerun that finishes a task's riders should the database refuse them, by task id.
_reruns: dict[str, dict[str, Any]] = {}
#: Seconds before such a rerun (native delayed delivery takes whole seconds).
RERUN_COUNTDOWN = 5
log = logging.getLogger(__name__)
#: Expired rows are deleted in batches, so cleanup never holds a long table lock.
CLEANUP_BATCH = 5000
_CLEANUP = """
DELETE FROM {table} WHERE {key} IN (
    SELECT {key} FROM {table} WHERE date_done < %s{only} ORDER BY date_done LIMIT %s
)
"""
#: The rows of one task that has its own ``result_expires``.
_ONE_TASK = " AND task_name = %s"
#: The rows of every other task, and rows stored without a task name.
_OTHER_TASKS = " AND (task_name IS NULL OR task_name <> ALL(%s::text[]))"


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

    def __init__(self, backend: PostgresBackend, task_ids: list[str]) -> None:
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


class PostgresBackend(BaseBackend):
    """Result backend storing task state in the ``task_results`` table."""

    #: Connection errors retried with backoff (``result_backend_always_retry``).
    RETRYABLE = (OperationalError, InterfaceError)
    #: ``GroupResult.get()`` and chords collect a group with ``get_many``: one query per round.
    supports_native_join = True
    app: Any  # set by Celery's Backend.__init__
    _cache: Any  # Celery's cache of ready results, by task id

    def __init__(self, app: Any = None, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app=app, url=url, **kwargs)
        self.url = sqlalchemy_url(url or app.conf.database_url)
        self.expires = self.prepare_expires(kwargs.get("expires"), type=float)
        # One backend per process, shared by its threads and greenlets: the
        # engine's pool is what keeps them apart.
        self.thread_safe = True
        options = app.conf.result_backend_transport_options or {}
        self.synchronous_commit = bool(options.get("synchronous_commit", True))
        #: None until the first wait checks that NOTIFY reaches this process; then True or False.
        self.notify_works: bool | None = None
        self._listeners = threading.local()

    # -- connections -----------------------------------------------------
    def _connection(self) -> Any:
        # All 30 connections are kept once opened: an overflow connection is
        # closed when returned, which under the gevent pool meant a new server
        # session (a PostgreSQL process) for most results.
        return engine_for(
            self.url,
            pool_size=30,
            max_overflow=0,
            autocommit=True,
            synchronous_commit=self.synchronous_commit,
        ).raw_connection()

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Any]:
        """A cursor on a pooled, prepared connection; a connection-level error discards the connection."""
        connection = self._connection()
        try:
            cursor = connection.cursor()
            try:
                if "magnetiq_prepared" not in connection.info:
                    cursor.execute("DEALLOCATE ALL")  # a half-prepared connection starts over
                    for statement in _PREPARE.values():
                        cursor.execute(statement)
                    connection.info["magnetiq_prepared"] = True
                yield cursor
            finally:
                cursor.close()
        except self.RETRYABLE:
            connection.invalidate()
            raise
        finally:
            connection.close()

    def _execute(
        self,
        sql: str,
        params: Any,
        fetch: bool | Literal["all"] = False,
        riders: Sequence[tuple[str, Any]] = (),
    ) -> Any:
        with self._cursor() as cursor:
            if riders:
                # One query string is one implicit transaction: all of it commits, or none.
                bound = [cursor.mogrify(s, p) for s, p in (*riders, (sql, params))]
                cursor.execute(b";\n".join(bound))
            else:
                cursor.execute(sql, params)
            if fetch == "all":
                return cursor.fetchall()
            return cursor.fetchone() if fetch else cursor.rowcount

    def exception_safe_to_retry(self, exc: BaseException) -> bool:
        """Connection-level errors are retried; data errors are not."""
        return isinstance(exc, self.RETRYABLE)

    # -- task results ----------------------------------------------------
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
        _riders.setdefault(task_id, []).append((sql, params))
        if rerun_headers:
            _reruns.setdefault(task_id, {}).update(rerun_headers)

    def flush_riders(self, task_id: str) -> None:
        """Run the statements still waiting for ``task_id``'s state, in one round trip."""
        riders = _riders.pop(task_id, None)
        _reruns.pop(task_id, None)
        if riders:
            (sql, params), before = riders[-1], riders[:-1]
            self._execute(sql, params, riders=before)

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
        riders = _riders.get(task_id, ())
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
        lock = [(_LOCK_STORE, (WAIT_LOCK, task_id))] if state in self.READY_STATES else []
        try:
            self._execute(_UPSERT, row, riders=[*lock, *riders])
        except self.RETRYABLE:
            raise  # kept until stored: a retried store carries them again
        except DatabaseError as exc:
            if not riders:
                raise
            # Refused: record the task's state alone, so its outcome is known
            # and Celery's trace goes on to task_postrun, which runs the riders
            # again and, if they are refused there too, publishes the rerun.
            log.warning("task %s: %d statement(s) bound to its result refused: %s", task_id, len(riders), exc)
            self._execute(_UPSERT, row, riders=lock)
            return result
        if riders:
            _riders.pop(task_id, None)
            _reruns.pop(task_id, None)
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

    def _meta(self, task_id: str, row: Sequence[Any]) -> dict[str, Any]:
        """A result's meta from its row (status .. date_done, then the extended columns)."""
        status, result, traceback, children, date_done, name, args, kwargs, worker, retries, queue = row
        meta = {
            "task_id": task_id,
            "status": status,
            "result": _load(result),
            "traceback": traceback,
            "children": _load(children) or [],
            "date_done": date_done,
        }
        if self.app.conf.result_extended:
            meta.update(
                name=name, args=_load(args), kwargs=_load(kwargs), worker=worker, retries=retries, queue=queue
            )
        decoded: dict[str, Any] = self.meta_from_decoded(meta)
        return decoded

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        row = self._execute(_SELECT, (task_id,), fetch=True)
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

    # -- waiting for results ---------------------------------------------
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
            "result": result_from_tuple(_load(row[0]), self.app),
            "date_done": row[1],
        }

    def _delete_group(self, group_id: str) -> None:
        self._execute("DELETE FROM group_results WHERE group_id = %s", (group_id,))

    # -- chords ----------------------------------------------------------
    def apply_chord(self, header_result_args: Any, body: Signature[Any], **kwargs: Any) -> None:
        """Save the header's group and create the chord's counter; publish no ``chord_unlock``.

        Celery calls this before it publishes the header, so the counter exists
        before any header task can finish.
        """
        self.ensure_chords_allowed()
        header = self.app.GroupResult(*header_result_args)
        header.save(backend=self)
        self._execute(_CREATE_CHORD, (header.id, len(header.results)))

    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        """Record the header's size as Celery counts it (a nested group's tasks each count)."""
        self._execute("UPDATE chord_counters SET size = %s WHERE group_id = %s", (chord_size, group_id))

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        """Count a finished header task once; the one that completes the header publishes the body.

        The chord's row is locked for the count, so two tasks finishing at the
        same moment are counted one after the other and only one sees the
        header complete; a redelivered task finds itself counted already. The
        body is published (with publisher confirms) before the transaction that
        marks the chord fired commits: a worker killed in between leaves the
        chord unfired, and the header task's redelivery publishes the body again
        under the same task id.
        """
        group_id = request.group
        if not group_id or not request.chord:
            return
        callback = maybe_signature(request.chord, app=self.app)
        assert callback is not None  # request.chord is a signature's dict
        with self._cursor() as cursor:
            try:
                cursor.execute("BEGIN")
                cursor.execute(_LOCK_CHORD, (group_id,))
                row = cursor.fetchone()
                if row is None:
                    cursor.execute("ROLLBACK")
                    log.error("chord %s: no counter (expired or never created); failing its body", group_id)
                    self.chord_error_from_stack(callback, ChordError(f"chord {group_id} no longer exists"))
                    return
                size, fired = request.chord.get("chord_size") or row[0], row[1]
                cursor.execute(_COUNT_PART, (group_id, request.id))
                cursor.execute(_BUMP_CHORD, (cursor.rowcount, size, group_id))
                done = cursor.fetchone()[0]
                if done >= size and not fired:
                    cursor.execute(_FIRE_CHORD, (group_id,))
                    self._fire(group_id, callback)
                cursor.execute("COMMIT")
            except BaseException:
                if not cursor.connection.closed:
                    cursor.execute("ROLLBACK")
                raise

    def _fire(self, group_id: str, callback: Any) -> None:
        """Join the complete header (one query) and publish the body, or fail it as Celery would."""
        header = GroupResult.restore(group_id, backend=self)
        if header is None:
            self.chord_error_from_stack(callback, ChordError(f"GroupResult {group_id} no longer exists"))
            return
        try:
            with allow_join_result():
                values = header.join_native(timeout=self.app.conf.result_chord_join_timeout, propagate=True)
        except Exception as exc:
            culprit = next((r for r in header.results or () if r.state in states.PROPAGATE_STATES), None)
            reason = f"Dependency {culprit.id} raised {exc!r}" if culprit is not None else repr(exc)
            log.warning("chord %s: %s", group_id, reason)
            error = ChordError(reason)
            error.__cause__ = exc
            self.chord_error_from_stack(callback, error)
            return
        callback.apply_async((values,), mandatory=True)

    # -- expiry ----------------------------------------------------------
    def cleanup(self) -> int:  # type: ignore[override]
        """Delete results older than their expiry, in small batches.

        A task with its own ``result_expires`` (``FleetTask``) has its rows
        deleted once older than that, shorter or longer than the app-wide
        ``result_expires``; every other result, group and chord row keeps the
        app-wide rule.

        Returns:
            The number of rows deleted.
        """
        now = datetime.now(UTC)
        own = self.task_expiries()
        deleted = 0
        for name, seconds in own.items():
            deleted += self._delete_expired("task_results", "task_id", now - timedelta(seconds=seconds), name)
        if self.expires:
            cutoff = now - timedelta(seconds=self.expires)
            deleted += self._delete_expired("task_results", "task_id", cutoff, sorted(own))
            deleted += self._delete_expired("group_results", "group_id", cutoff)
            deleted += self._delete_expired("chord_counters", "group_id", cutoff)
        # Waits end when they return or time out; a row older than a day is a waiter that died.
        self._execute("DELETE FROM result_waiters WHERE since < now() - interval '1 day'", ())
        return deleted

    def task_expiries(self) -> dict[str, int]:
        """Each task with its own ``result_expires``: seconds, by task name.

        The app's task modules are imported first, so a process that never ran
        a task (a shell, a producer) still sees every override.
        """
        for module in self.app.conf.include or ():
            importlib.import_module(module)
        found = ((name, getattr(task, "result_expires", None)) for name, task in self.app.tasks.items())
        return {name: seconds for name, seconds in found if seconds is not None}

    def _delete_expired(
        self, table: str, key: str, cutoff: datetime, task: str | list[str] | None = None
    ) -> int:
        """Delete ``table``'s rows done before ``cutoff``, ``CLEANUP_BATCH`` at a time.

        ``task`` None deletes any row, a task name only that task's rows, and a
        list of names the rows of every task but those (and rows without a name).
        """
        only = "" if task is None else _ONE_TASK if isinstance(task, str) else _OTHER_TASKS
        sql = _CLEANUP.format(table=table, key=key, only=only)
        params = (cutoff, CLEANUP_BATCH) if task is None else (cutoff, task, CLEANUP_BATCH)
        deleted = 0
        while (count := self._execute(sql, params)) > 0:
            deleted += count
        return deleted

    def __reduce__(self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        return super().__reduce__(args, {**(kwargs or {}), "url": self.url})  # type: ignore[call-arg]


@signals.task_postrun.connect(weak=False)
def _flush_riders(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    # The end of the trace, before the ack: what no stored state took runs on its own.
    waiting = len(_riders.get(task_id or "", ()))
    if not task_id or not waiting:
        return
    rerun_headers = _reruns.get(task_id)
    try:
        task.backend.flush_riders(task_id)
    except Exception as exc:
        _riders.pop(task_id, None)
        _reruns.pop(task_id, None)
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


def _load(text: str | None) -> Any:
    # Columns are read as text so kombu's decoder restores the types it encoded
    # (datetimes, UUIDs, decimals); psycopg2's jsonb parser would not.
    return None if text is None else loads(text)
