"""Result expiry: rows older than their task's or the app's ``result_expires``, deleted in batches."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta

from app.result_backend.connection import SqlBackend

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


class ExpiringBackend(SqlBackend):
    """``cleanup``, run by the maintenance task that expires results."""

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
            # A cancellation lasts as long as a result: a message may wait that long (a DLQ replay).
            deleted += self._execute("DELETE FROM task_cancellations WHERE cancelled_at < %s", (cutoff,))
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
