"""The delivery ledger: one row per idempotency key, so an email is sent once.

``claim`` runs before SMTP and ``record_*`` after it. A key whose row says
``sent`` is never sent again; a row another attempt is ``sending`` is left to
it until its lease runs out (that attempt's process may have died mid-send).
A ``sent`` mark the database refuses is owed by the task's rerun, which
commits it instead of sending again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

#: ``commit_with(task_id, sql, params, rerun_headers)``: commit ``sql`` with the running
#: task's result row and return True, or return False (then the ledger runs it on its
#: own). Should the database refuse it, the task runs again with ``rerun_headers``.
CommitWith = Callable[[str, str, dict[str, Any], dict[str, str]], bool]
#: ``accepted(key, task_id)``: did an earlier run of task ``task_id`` send ``key``
#: (SMTP accepted it) without its ``sent`` mark being committed?
Accepted = Callable[[str, str], bool]
#: The header of a task's rerun after SMTP accepted its email and the database
#: refused the ``sent`` mark: its value is the key. The rerun commits the mark
#: and sends nothing.
SENT_UNMARKED_HEADER = "email_sent_unmarked"
#: What a claim found: send now, already sent, another attempt holds it, or refused for good.
ClaimState = Literal["send", "sent", "busy", "refused"]


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming an idempotency key."""

    state: ClaimState
    #: The stored reason of a refused (permanently failed) email.
    reason: str | None = None
    #: Seconds until a busy key's lease runs out (when another attempt may take it over).
    retry_in: float | None = None
    #: The attempt number a ``send`` claim took; its failure is recorded against it.
    attempt: int | None = field(default=None, compare=False)


class SentMarkRefused(Exception):
    """The database refused to mark sent an email SMTP accepted; the mark is still owed."""

    def __init__(self, key: str, cause: BaseException) -> None:
        super().__init__(f"email {key!r} was sent; the database refused its sent mark: {cause}")
        #: The idempotency key whose mark is owed (see ``SENT_UNMARKED_HEADER``).
        self.key = key


class DeliveryLedger(Protocol):
    """Where the fleet records which emails it sent."""

    def claim(self, key: str, template: str, message_id: str, task_id: str | None) -> Claim:
        """Take ``key`` for sending unless it was sent, is being sent, or was refused."""

    def record_sent(self, key: str, task_id: str | None = None) -> None:
        """Mark ``key`` as sent (by task ``task_id``, when a task sent it)."""

    def record_failure(self, key: str, reason: str, *, permanent: bool, attempt: int | None = None) -> None:
        """Release ``key`` after a failed attempt (``permanent``: never try it again).

        With ``attempt``, only while that attempt still holds the key: an
        attempt that stalled past its lease must not free a key another
        attempt took over and is sending.
        """


_CLAIM = """
    INSERT INTO email_deliveries AS d
        (idempotency_key, template, message_id, task_id, status, attempts, updated_at)
    VALUES (%(key)s, %(template)s, %(message_id)s, %(task_id)s, 'sending', 1, now())
    ON CONFLICT (idempotency_key) DO UPDATE
        SET status = 'sending', attempts = d.attempts + 1, task_id = EXCLUDED.task_id, updated_at = now()
        WHERE d.status = 'pending'
           OR (d.status = 'sending' AND d.updated_at < now() - make_interval(secs => %(lease)s))
    RETURNING attempts
"""
_STATE = (
    "SELECT status, last_error, "
    "extract(epoch FROM updated_at + make_interval(secs => %(lease)s) - now()) AS lease_left "
    "FROM email_deliveries WHERE idempotency_key = %(key)s"
)
_SENT = (
    "UPDATE email_deliveries SET status = 'sent', sent_at = now(), updated_at = now(), last_error = NULL "
    "WHERE idempotency_key = %(key)s"
)
#: The mark an earlier run of the same task owes: only while that task still holds the key.
_SENT_OWED = (
    "UPDATE email_deliveries SET status = 'sent', sent_at = now(), updated_at = now(), last_error = NULL "
    "WHERE idempotency_key = %(key)s AND task_id = %(task_id)s AND status = 'sending' RETURNING 1"
)
_FAILED = (
    "UPDATE email_deliveries SET status = %(status)s, last_error = %(reason)s, updated_at = now() "
    "WHERE idempotency_key = %(key)s AND status = 'sending' "
    "AND (%(attempt)s::integer IS NULL OR attempts = %(attempt)s::integer)"
)


class SqlDeliveryLedger:
    """The ledger in PostgreSQL's ``email_deliveries`` (one autocommit statement per step).

    Statements go straight to a pooled DBAPI connection: SQLAlchemy's
    ``Connection`` and ``text()`` layers cost more CPU per email than the
    round trip they wrap.
    """

    def __init__(
        self,
        engine: Engine,
        lease_seconds: float,
        commit_with: CommitWith | None = None,
        accepted: Accepted | None = None,
    ) -> None:
        """Use ``engine``; a ``sending`` row older than ``lease_seconds`` may be taken over.

        With ``commit_with``, the ``sent`` mark of an email a task sent rides in
        the round trip that stores the task's result (see
        ``PostgresBackend.commit_with_result``): one round trip and commit per
        email fewer, still committed before the task's message is acked. If the
        database refuses it, the task runs again with ``SENT_UNMARKED_HEADER``;
        ``accepted`` tells ``claim`` so, and the rerun commits the mark instead
        of sending (even past the lease, when a plain claim would send again).
        """
        self._engine = engine
        self._lease = lease_seconds
        self._commit_with = commit_with
        self._accepted = accepted
        dbapi = engine.dialect.dbapi
        self._dbapi_errors: tuple[type[BaseException], ...] = (
            (dbapi.OperationalError, dbapi.InterfaceError) if dbapi is not None else (DBAPIError,)
        )
        self._refusals: tuple[type[BaseException], ...] = (
            (dbapi.Error,) if dbapi is not None else (DBAPIError,)
        )

    def claim(self, key: str, template: str, message_id: str, task_id: str | None) -> Claim:
        """Insert or take over the row of ``key``; otherwise report what holds it.

        Raises:
            SentMarkRefused: an earlier run of ``task_id`` sent ``key`` and the
                database still refuses its ``sent`` mark.
        """
        if (
            task_id
            and self._accepted is not None
            and self._accepted(key, task_id)
            and self._mark_owed(key, task_id)
        ):
            return Claim("sent")
        params = {
            "key": key,
            "template": template,
            "message_id": message_id,
            "task_id": task_id,
            "lease": self._lease,
        }
        taken = self._execute(_CLAIM, params)
        if taken is not None:
            return Claim("send", attempt=int(taken[0]))
        state = self._execute(_STATE, {"key": key, "lease": self._lease})
        if state is None:  # pragma: no cover - the row was there a statement ago; rows are never deleted
            raise RuntimeError(f"email_deliveries row of {key!r} vanished")
        status, reason, lease_left = state
        if status == "sent":
            return Claim("sent")
        if status == "failed":
            return Claim("refused", reason)
        return Claim("busy", retry_in=max(1.0, float(lease_left)))

    def record_sent(self, key: str, task_id: str | None = None) -> None:
        """Mark ``key`` as sent: with task ``task_id``'s result when it can, else at once.

        Raises:
            SentMarkRefused: the database refused the mark made at once.
        """
        params = {"key": key}
        rerun = {SENT_UNMARKED_HEADER: key}
        if task_id and self._commit_with is not None and self._commit_with(task_id, _SENT, params, rerun):
            return
        self._mark(key, _SENT, params)

    def record_failure(self, key: str, reason: str, *, permanent: bool, attempt: int | None = None) -> None:
        """Store the reason; a transient failure leaves the key ``pending`` for the next attempt.

        A failure of an attempt other than ``attempt`` (when given) changes nothing.
        """
        status = "failed" if permanent else "pending"
        self._execute(_FAILED, {"key": key, "reason": reason, "status": status, "attempt": attempt})

    def _mark_owed(self, key: str, task_id: str) -> bool:
        """Commit the mark an earlier run of ``task_id`` owes ``key``; False if it holds the key no more."""
        return self._mark(key, _SENT_OWED, {"key": key, "task_id": task_id}) is not None

    def _mark(self, key: str, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """Run a ``sent`` mark of ``key``: the email went out, so a refusal must not pass unnoticed."""
        try:
            return self._execute(sql, params)
        except self._refusals as exc:
            raise SentMarkRefused(key, exc) from exc

    def _execute(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """Run one statement and commit; return its first row, if it returns rows."""
        connection = self._engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(sql, params)
                row = cursor.fetchone() if cursor.description is not None else None
            finally:
                cursor.close()
            connection.commit()  # no round trip on an autocommit connection
            return None if row is None else tuple(row)
        except self._dbapi_errors:
            connection.invalidate()  # its state is unknown: never hand it out again
            raise
        finally:
            connection.close()
