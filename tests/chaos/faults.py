"""Test-only worker code for the fault harness, loaded with ``celery worker --include``.

It records every task execution in the ledger (``chaos_executions``; a periodic
job's execution under its slot's epoch second), can stretch
each task by ``CHAOS_TASK_DELAY`` seconds so faults land mid-task, and adds two
tasks that never succeed: one kills its own process, one raises.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime
from typing import Any

import psycopg2
from celery import signals

from app.celery_app import celery_app

ALWAYS_CRASH = "tests.chaos.faults.always_crash"
ALWAYS_RAISE = "tests.chaos.faults.always_raise"
APPLY_UNGUARDED = "tests.chaos.faults.apply_unguarded"
#: The ledger's database (a plain ``postgresql://`` URL).
LEDGER_DSN = os.environ.get("CHAOS_LEDGER_DSN", "")
#: Seconds every task sleeps after its execution is recorded, before its body runs.
TASK_DELAY = float(os.environ.get("CHAOS_TASK_DELAY", "0"))

_lock = threading.Lock()
_connection: dict[int, Any] = {}  # pid -> psycopg2 connection (prefork children each open their own)


class AlwaysFails(RuntimeError):
    """Raised by ``always_raise``."""


def operation_of(kwargs: dict[str, Any]) -> int | None:
    """The harness's operation number a task's arguments carry."""
    if "op" in kwargs:
        return int(kwargs["op"])
    if "payment_id" in kwargs:
        return int(kwargs["payment_id"])
    if "slot" in kwargs:  # a periodic job's slot: its epoch second
        slot = kwargs["slot"]
        return int((slot if isinstance(slot, datetime) else datetime.fromisoformat(str(slot))).timestamp())
    email = kwargs.get("user_email", kwargs.get("to"))
    if isinstance(email, str) and email.startswith("op-"):
        return int(email.split("@", 1)[0].removeprefix("op-"))
    return None


def record_execution(task_id: str, task_name: str, op: int | None) -> None:
    """Append one row to ``chaos_executions``; a database outage loses the row, not the task."""
    pid = os.getpid()
    with _lock:  # one connection per process; gevent greenlets take turns (the lock is patched)
        _record(pid, task_id, task_name, op)


def _record(pid: int, task_id: str, task_name: str, op: int | None) -> None:
    try:
        connection = _connection.get(pid)
        if connection is None or connection.closed:
            connection = _connection[pid] = psycopg2.connect(LEDGER_DSN, connect_timeout=3)
            connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO chaos_executions (op, task_id, task_name, pid) VALUES (%s, %s, %s, %s)",
                (op, task_id, task_name, pid),
            )
    except psycopg2.Error:
        _connection.pop(pid, None)


@signals.task_prerun.connect(weak=False, dispatch_uid="chaos-executions")
def on_prerun(task_id: str = "", task: Any = None, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    """Record the execution, then hold the task for ``CHAOS_TASK_DELAY`` seconds."""
    if LEDGER_DSN:
        record_execution(task_id, getattr(task, "name", ""), operation_of(kwargs or {}))
    if TASK_DELAY:
        time.sleep(TASK_DELAY)


@celery_app.task(name=ALWAYS_CRASH)
def always_crash(op: int) -> None:
    """Kill the process running this task (as a segfault or the OOM killer would)."""
    os.kill(os.getpid(), signal.SIGKILL)


@celery_app.task(name=ALWAYS_RAISE)
def always_raise(op: int) -> None:
    """Fail every time."""
    raise AlwaysFails(f"operation {op} always fails")


@celery_app.task(name=APPLY_UNGUARDED)
def apply_unguarded(op: int) -> None:
    """Mark payment ``op`` processed with no idempotency guard: each run is another effect.

    Only the harness's self-check uses it, to show that duplicate effects are caught.
    """
    with psycopg2.connect(LEDGER_DSN, connect_timeout=3) as connection, connection.cursor() as cursor:
        cursor.execute("UPDATE payments SET status = 'processed', processed_at = now() WHERE id = %s", (op,))
    connection.close()
