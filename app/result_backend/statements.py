"""The result store's hottest statements, and how they are prepared once per server session."""

from __future__ import annotations

import itertools
import re
import zlib
from dataclasses import dataclass, field

#: The channel a stored result is announced on, when someone waits for it (``result_waiters``).
CHANNEL = "magnetiq_results"
#: Advisory-lock class of result waits. A ready state's store takes it shared on
#: its task id before the statement that stores it (so that statement's snapshot
#: is taken after the lock); a waiter's registration takes it exclusive. So either
#: the registration commits first and the store sees its ``result_waiters`` row,
#: or the store commits first and the waiter's next read sees the result.
WAIT_LOCK = 0x6D67
LOCK_STORE = "SELECT pg_advisory_xact_lock_shared(%s, hashtext(%s))"

#: One state change: an upsert that never overwrites a success, and never a
#: failure with a state that is not final; a final state someone waits for is announced.
STORE = """
WITH stored AS (
    INSERT INTO task_results (
        task_id, status, task_name, result, traceback, children, date_done,
        args, kwargs, worker, retries, queue
    )
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
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
"""
#: One task's row.
SELECT = """
SELECT status, result::text, traceback, children::text, date_done,
       task_name, args::text, kwargs::text, worker, retries, queue
FROM task_results WHERE task_id = %s
"""


@dataclass(frozen=True)
class Prepared:
    """A statement run as a server-side prepared statement where the session keeps it.

    Planning the upsert costs about a quarter of its time. The name carries a
    hash of the text, so two releases of the fleet sharing a server session
    (a rolling upgrade behind a pooler) never run each other's statement.
    """

    key: str
    types: str
    sql: str
    name: str = field(init=False)
    prepare: str = field(init=False)
    execute: str = field(init=False)

    def __post_init__(self) -> None:
        name = f"magnetiq_{self.key}_{zlib.crc32(self.sql.encode()):08x}"
        numbers = itertools.count(1)
        body = re.sub("%s", lambda _: f"${next(numbers)}", self.sql)
        arity = len(self.types.split(","))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "prepare", f"PREPARE {name} ({self.types}) AS {body}")
        object.__setattr__(self, "execute", f"EXECUTE {name} ({', '.join(['%s'] * arity)})")


#: The prepared form of each plain statement, by the plain statement's text.
PREPARED = {
    statement.sql: statement
    for statement in (
        Prepared(
            "store_result",
            "text, text, text, jsonb, text, jsonb, timestamptz, jsonb, jsonb, text, integer, text",
            STORE,
        ),
        Prepared("get_result", "text", SELECT),
    )
}
