"""Celery result backend on PostgreSQL: pooled, one upsert per state change, JSON rows.

Celery's stock ``DatabaseBackend`` opens a connection per stored result outside
forked children, builds a backend per greenlet under gevent, and locks the row
before each write. This backend keeps Celery's result API (``AsyncResult``,
groups, chords) and stores each state change with a single ``INSERT ... ON
CONFLICT DO UPDATE`` whose ``WHERE`` clause keeps a finished result from being
overwritten by a late duplicate (``store``, ``statements``).

Chords are native (``chords``): no ``chord_unlock`` task polls for them. A chord
gets a counter row before its header is published; each header task, as it
finishes, counts itself once (a redelivered task is not counted again) under the
row's lock, and the one that completes the header joins the results (one query)
and publishes the body, marking the chord fired in the same transaction. A write
that belongs with a task's outcome (the mail ledger's "sent" mark) can ride in
the same round trip and transaction (``riders``); one the database refuses is
never dropped: the task is published again to finish it. Waits for a result are
woken by NOTIFY where it reaches them and poll where it does not (``waits``).
"""

from app.result_backend.statements import CHANNEL
from app.result_backend.store import PostgresBackend
from app.result_backend.waits import REGISTER_BATCH, Listener

__all__ = ["CHANNEL", "REGISTER_BATCH", "Listener", "PostgresBackend"]
