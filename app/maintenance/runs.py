"""Beat's PostgreSQL coordination: the leader lease and one ``periodic_runs`` row per (job, slot).

Beat claims a slot by inserting its row, fenced by the lease, and writes the
slot's task to the outbox in the same transaction, under the slot's own task id
(``slot_task_id``): a slot is claimed once even if two beats briefly both think
they lead, and a claimed slot is published at least once. The task runs the
slot inside ``running``: it holds the slot's run lock while it runs and starts
only a slot that has not succeeded, so a second message of the slot (the relay
published it again) does nothing, whether it arrives during the run or after.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, text

#: The lease row every beat replica competes for.
LEASE_NAME = "beat"
#: Names a slot's task id (``slot_task_id``): the same slot always gets the same id.
SLOT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "magnetiq:periodic_runs")

#: What a message of a slot does: run it, or nothing because the slot already ran
#: (succeeded) or another message of it is running it right now.
Turn = Literal["run", "ran", "running"]

_HOLD = text("""
INSERT INTO beat_leases (name, holder, acquired_at, renewed_at, expires_at)
VALUES (:name, :holder, now(), now(), now() + make_interval(secs => :seconds))
ON CONFLICT (name) DO UPDATE SET
    holder = EXCLUDED.holder,
    acquired_at = CASE WHEN beat_leases.holder = EXCLUDED.holder
                       THEN beat_leases.acquired_at ELSE now() END,
    renewed_at = now(),
    expires_at = EXCLUDED.expires_at
WHERE beat_leases.holder = EXCLUDED.holder OR beat_leases.expires_at <= now()
""")
_READ_LEASE = text(
    "SELECT now() AS now, holder, expires_at FROM (SELECT 1) AS one "
    "LEFT JOIN beat_leases ON beat_leases.name = :name"
)
_RELEASE = text("UPDATE beat_leases SET expires_at = now() WHERE name = :name AND holder = :holder")
_CLAIM = text("""
INSERT INTO periodic_runs (job, slot, task_id, status, sent_by)
SELECT :job, :slot, :task_id, 'sent', :sent_by
WHERE :fenced IS FALSE OR EXISTS (
    SELECT 1 FROM beat_leases WHERE name = :lease AND holder = :sent_by AND expires_at > now()
)
ON CONFLICT (job, slot) DO NOTHING
RETURNING job
""")
# Only under the slot's run lock (``running``): a row left ``started`` then means its
# runner died (its lock went with its connection), so any message of the slot may start it.
_START = text("""
INSERT INTO periodic_runs (job, slot, task_id, status, started_at)
VALUES (:job, :slot, :task_id, 'started', now())
ON CONFLICT (job, slot) DO UPDATE SET
    task_id = EXCLUDED.task_id, status = 'started', started_at = now(), finished_at = NULL, detail = NULL
WHERE periodic_runs.status <> 'succeeded'
RETURNING job
""")
# A transaction-level lock (it works through a transaction pooler), keyed by the slot.
_RUN_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:key, 0))")
_FINISH = text("""
UPDATE periodic_runs SET status = :status, finished_at = now(), detail = CAST(:detail AS jsonb)
WHERE job = :job AND slot = :slot AND task_id = :task_id
""")
_LAST_RUNS = text("""
SELECT DISTINCT ON (job) job, slot, status, sent_by, finished_at FROM periodic_runs
ORDER BY job, slot DESC
""")


@dataclass(frozen=True)
class Lease:
    """The lease as one beat saw it: whether it leads, who does, and the database's clock."""

    leader: bool
    holder: str | None
    expires_at: datetime | None
    #: The database's ``now()``: every replica computes slots on this one clock.
    now: datetime


def hold_lease(engine: Engine, holder: str, seconds: float, name: str = LEASE_NAME) -> Lease:
    """Take the lease if it is free or expired, or renew it if ``holder`` has it."""
    with engine.begin() as connection:
        connection.execute(_HOLD, {"name": name, "holder": holder, "seconds": seconds})
        row = connection.execute(_READ_LEASE, {"name": name}).one()
    return Lease(row.holder == holder, row.holder, row.expires_at, row.now.astimezone(UTC))


def release_lease(engine: Engine, holder: str, name: str = LEASE_NAME) -> bool:
    """Let the lease expire now if ``holder`` has it, so a standby takes over at once.

    Returns:
        Whether ``holder`` had the lease.
    """
    with engine.begin() as connection:
        return connection.execute(_RELEASE, {"name": name, "holder": holder}).rowcount > 0


def read_lease(engine: Engine, name: str = LEASE_NAME) -> Lease:
    """Return who holds the lease (``leader`` is always False: nobody asked to lead)."""
    with engine.connect() as connection:
        row = connection.execute(_READ_LEASE, {"name": name}).one()
    return Lease(False, row.holder, row.expires_at, row.now.astimezone(UTC))


def recorded_slots(engine: Engine, job: str, since: datetime) -> set[datetime]:
    """Return the slots of ``job`` at or after ``since`` that already have a run row."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT slot FROM periodic_runs WHERE job = :job AND slot >= :since"),
            {"job": job, "since": since},
        )
        return set(rows.scalars())


def first_slot(engine: Engine, job: str) -> datetime | None:
    """Return the oldest recorded slot of ``job``, or None if it never ran."""
    with engine.connect() as connection:
        found = connection.execute(text("SELECT min(slot) FROM periodic_runs WHERE job = :job"), {"job": job})
        first: datetime | None = found.scalar_one()
        return first


def claim_slot(
    connection: Connection, job: str, slot: datetime, task_id: str, sent_by: str, *, fenced: bool = True
) -> bool:
    """Insert the run row of (job, slot) as ``sent``, in the caller's transaction.

    Args:
        connection: a connection inside a transaction the caller commits after publishing.
        job: the job name.
        slot: the schedule slot (or the moment of a run by hand).
        task_id: the id the task will be published with.
        sent_by: the lease holder (or who ran it by hand).
        fenced: insert only while ``sent_by`` holds the lease (beat); False for a run by hand.

    Returns:
        True if this call claimed the slot; False if it was claimed before, or the lease was lost.
    """
    params = {
        "job": job,
        "slot": slot,
        "task_id": task_id,
        "sent_by": sent_by,
        "fenced": fenced,
        "lease": LEASE_NAME,
    }
    return connection.execute(_CLAIM, params).first() is not None


def slot_task_id(job: str, slot: datetime) -> str:
    """Return the task id of (job, slot): every message of one slot carries the same id."""
    return str(uuid.uuid5(SLOT_NAMESPACE, _slot_key(job, slot)))


def _slot_key(job: str, slot: datetime) -> str:
    return f"{job}@{slot.astimezone(UTC).isoformat()}"


@contextmanager
def running(engine: Engine, job: str, slot: datetime, task_id: str) -> Iterator[Turn]:
    """Hold (job, slot)'s run lock for the block; yield whether this task runs the slot.

    The lock is a transaction-level advisory lock on a connection of its own,
    held until the block ends (or the process dies and its connection with it).
    Under it the row is marked ``started`` unless the slot succeeded before.
    A second message of the slot therefore finds the lock taken while the
    first runs (``running``), or the row ``succeeded`` after it (``ran``). A
    redelivery after its worker died, and a retry after a failure, run again.

    Yields:
        ``run`` when the caller should run the job and then call ``finish_run``
        inside the block; ``running`` or ``ran`` when it should do nothing.
    """
    key = f"periodic_runs:{_slot_key(job, slot)}"
    with engine.connect() as holder, holder.begin():
        if not holder.execute(_RUN_LOCK, {"key": key}).scalar_one():
            yield "running"
            return
        with engine.begin() as connection:
            started = connection.execute(_START, {"job": job, "slot": slot, "task_id": task_id}).first()
        yield "run" if started is not None else "ran"


def finish_run(engine: Engine, job: str, slot: datetime, task_id: str, *, ok: bool, detail: str) -> None:
    """Record the outcome of a run this task started (``detail`` is a JSON document)."""
    params = {
        "job": job,
        "slot": slot,
        "task_id": task_id,
        "status": "succeeded" if ok else "failed",
        "detail": detail,
    }
    with engine.begin() as connection:
        connection.execute(_FINISH, params)


def last_runs(engine: Engine) -> dict[str, Any]:
    """Return each job's newest run row (job, slot, status, sent_by, finished_at), by job name."""
    with engine.connect() as connection:
        return {row.job: row for row in connection.execute(_LAST_RUNS)}
