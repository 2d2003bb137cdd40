"""The result backend's connections: a pooled engine per process, statements prepared where they last."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import psycopg2.errors
from celery.backends.base import BaseBackend
from kombu.utils.json import loads
from psycopg2 import InterfaceError, OperationalError

from app.db import engine_for
from app.result_backend.statements import PREPARED
from app.settings import sqlalchemy_url

log = logging.getLogger(__name__)
#: What a server session says when a statement prepared on "this connection" is
#: not there, or one of its name already is: a pooler in transaction mode hands
#: each transaction whichever server session is free.
NOT_PREPARED = (psycopg2.errors.InvalidSqlStatementName, psycopg2.errors.DuplicatePreparedStatement)


class SqlBackend(BaseBackend):
    """A Celery backend that runs its statements on this process's pool of autocommit connections."""

    #: Connection errors retried with backoff (``result_backend_always_retry``).
    RETRYABLE = (OperationalError, InterfaceError)
    app: Any  # set by Celery's Backend.__init__

    def __init__(self, app: Any = None, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app=app, url=url, **kwargs)
        self.url = sqlalchemy_url(url or app.conf.database_url)
        self.expires = self.prepare_expires(kwargs.get("expires"), type=float)
        # One backend per process, shared by its threads and greenlets: the
        # engine's pool is what keeps them apart.
        self.thread_safe = True
        options = app.conf.result_backend_transport_options or {}
        self.synchronous_commit = bool(options.get("synchronous_commit", True))
        #: False once a server session lost a prepared statement (a pooler in
        #: transaction mode): from then on this process runs them as plain SQL.
        self.prepared = True

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
    def _cursor(self, prepare: bool = False) -> Iterator[Any]:
        """A cursor on a pooled connection (``prepare``: with the statements prepared).

        A connection-level error discards the connection.
        """
        connection = self._connection()
        try:
            cursor = connection.cursor()
            try:
                if prepare and "magnetiq_prepared" not in connection.info:
                    cursor.execute("DEALLOCATE ALL")  # a half-prepared connection starts over
                    for statement in PREPARED.values():
                        cursor.execute(statement.prepare)
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
        """Run ``sql`` (after ``riders``, in its transaction); prepared where it has a prepared form."""
        statement = PREPARED.get(sql) if self.prepared else None
        if statement is None:
            return self._run(sql, params, fetch, riders)
        try:
            return self._run(statement.execute, params, fetch, riders, prepare=True)
        except NOT_PREPARED as exc:
            # The whole query string failed, riders included: run it again, plain.
            if self.prepared:
                self.prepared = False
                log.warning(
                    "result store: a prepared statement did not outlive its transaction (%s); "
                    "a pooler in transaction mode? This process now sends plain statements",
                    str(exc).strip(),
                )
            return self._run(sql, params, fetch, riders)

    def _run(
        self,
        sql: str,
        params: Any,
        fetch: bool | Literal["all"],
        riders: Sequence[tuple[str, Any]],
        prepare: bool = False,
    ) -> Any:
        with self._cursor(prepare) as cursor:
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

    def _meta(self, task_id: str, row: Sequence[Any]) -> dict[str, Any]:
        """A result's meta from its row (status .. date_done, then the extended columns)."""
        status, result, traceback, children, date_done, name, args, kwargs, worker, retries, queue = row
        meta = {
            "task_id": task_id,
            "status": status,
            "result": load(result),
            "traceback": traceback,
            "children": load(children) or [],
            "date_done": date_done,
        }
        if self.app.conf.result_extended:
            meta.update(
                name=name, args=load(args), kwargs=load(kwargs), worker=worker, retries=retries, queue=queue
            )
        decoded: dict[str, Any] = self.meta_from_decoded(meta)
        return decoded

    def __reduce__(self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        return super().__reduce__(args, {**(kwargs or {}), "url": self.url})  # type: ignore[call-arg]


def load(text: str | None) -> Any:
    """A JSON column read as text, decoded by kombu.

    Columns are read as text so kombu's decoder restores the types it encoded
    (datetimes, UUIDs, decimals); psycopg2's jsonb parser would not.
    """
    return None if text is None else loads(text)
