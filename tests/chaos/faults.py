"""Test-only worker code for the fault harness, loaded with ``celery worker --include``.

It records every task execution (a periodic job's under its slot's epoch
second) in an append-only file per process, which survives the database
and the process itself going down; it can stretch each task by
``CHAOS_TASK_DELAY`` seconds so faults land mid-task; and it adds tasks that
never succeed (one kills its own process, one raises) and one that touches
nothing but the ledger. Two more break the idempotency rules on purpose, for
the harness's self-check.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
from celery import signals

from app.booking.provider import HttpPaymentProvider
from app.celery_app import celery_app

ALWAYS_CRASH = "tests.chaos.faults.always_crash"
ALWAYS_RAISE = "tests.chaos.faults.always_raise"
APPLY_UNGUARDED = "tests.chaos.faults.apply_unguarded"
CHARGE_UNGUARDED = "tests.chaos.faults.charge_unguarded"
TOUCH_NOTHING = "tests.chaos.faults.touch_nothing"
#: The domain database, for ``apply_unguarded`` (a plain ``postgresql://`` URL).
LEDGER_DSN = os.environ.get("CHAOS_LEDGER_DSN", "")
#: Where executions are recorded, one ``<pid>.jsonl`` file per process; unset: not recorded.
EXECUTIONS_DIR = os.environ.get("CHAOS_EXECUTIONS_DIR", "")
#: Seconds every task sleeps after its execution is recorded, before its body runs.
TASK_DELAY = float(os.environ.get("CHAOS_TASK_DELAY", "0"))


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


def record_execution(directory: Path, task_id: str, task_name: str, op: int | None) -> None:
    """Append one line to this process's file in ``directory``.

    One ``write(2)`` on an ``O_APPEND`` descriptor: the line is in the kernel
    once it returns, so neither a database outage nor a SIGKILL right after
    loses it, and greenlets or threads of one process never interleave lines.
    """
    pid = os.getpid()
    line = {"op": op, "task_id": task_id, "task_name": task_name, "pid": pid, "at": time.time()}
    fd = os.open(directory / f"{pid}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


@signals.task_prerun.connect(weak=False, dispatch_uid="chaos-executions")
def on_prerun(task_id: str = "", task: Any = None, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    """Record the execution, then hold the task for ``CHAOS_TASK_DELAY`` seconds."""
    if EXECUTIONS_DIR:
        record_execution(Path(EXECUTIONS_DIR), task_id, getattr(task, "name", ""), operation_of(kwargs or {}))
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


@celery_app.task(name=TOUCH_NOTHING, ignore_result=True)
def touch_nothing(op: int) -> None:
    """Do nothing, store no result: it runs while the database is down (the ledger's self-check)."""


@celery_app.task(name=CHARGE_UNGUARDED)
def charge_unguarded(op: int) -> None:
    """Charge payment ``op`` under a fresh idempotency key each run: each run is another charge.

    Only the harness's self-check uses it, to show that a payment charged twice is caught.
    """
    provider = HttpPaymentProvider(os.environ["PAYMENT_PROVIDER_URL"], timeout=10)
    provider.charge(f"unguarded:{uuid.uuid4()}", 100, "EUR", f"payment {op}")
