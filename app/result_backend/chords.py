"""Native chords: a counter row per chord, each header task counted once, the last one fires the body."""

from __future__ import annotations

import logging
from typing import Any

from celery import states
from celery.canvas import Signature, maybe_signature
from celery.exceptions import ChordError
from celery.result import GroupResult, allow_join_result

from app.result_backend.connection import SqlBackend

log = logging.getLogger(__name__)
_CREATE_CHORD = (
    "INSERT INTO chord_counters (group_id, size) VALUES (%s, %s) ON CONFLICT (group_id) DO NOTHING"
)
#: Statements of one header task's return, in one transaction: lock the chord,
#: count the task once, read the count, claim the body if the header is complete.
_LOCK_CHORD = "SELECT size, fired_at IS NOT NULL FROM chord_counters WHERE group_id = %s FOR UPDATE"
_COUNT_PART = "INSERT INTO chord_parts (group_id, task_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"
_BUMP_CHORD = "UPDATE chord_counters SET done = done + %s, size = %s WHERE group_id = %s RETURNING done"
_FIRE_CHORD = "UPDATE chord_counters SET fired_at = now() WHERE group_id = %s"


class ChordBackend(SqlBackend):
    """Chords without ``chord_unlock``: the header's last task publishes the body."""

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
