"""Beat's scheduler: one leader by a PostgreSQL lease, and each (job, slot) claimed once, recorded as data.

Any number of ``python -m workers beat`` replicas may run. Each tick, every
replica tries to take or renew the lease row; the holder claims every due slot
that ``periodic_runs`` does not record yet, each in its own transaction (the
run row, fenced by the lease, and the slot's task in the outbox, under the
slot's own task id), then relays the committed, unsent slot tasks with
confirms. A leader that dies before a commit leaves nothing (the next leader
claims the slot); one that dies after it leaves a row the next leader relays;
one that dies between a confirm and the relay's stamp leaves a second message
of the same slot, which the task's run lock turns into a no-op. Slots come from
the cron expressions on the database's clock, so a restart, a second replica
or a failover neither repeats nor skips one within a job's grace.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from celery import Celery
from celery.beat import Scheduler
from celery.exceptions import ImproperlyConfigured
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app import contracts, outbox
from app.db import engine_for
from app.maintenance import runs
from app.maintenance.schedule import Job, load_schedule
from app.settings import get_settings
from workers import metrics

log = logging.getLogger(__name__)

#: Beat's own header on what it publishes (the metrics stamp the beat gauge from it).
BEAT_HEADERS = {"celery_beat_task": True}


def send_slot(
    engine: Engine,
    job: Job,
    slot: datetime,
    sent_by: str,
    *,
    fenced: bool = True,
    headers: dict[str, Any] | None = None,
) -> str | None:
    """Claim (job, slot) and write its task to the outbox, in one transaction.

    The run row and the message commit together or not at all; ``relay``
    publishes the message after the commit, under the slot's task id.

    Returns:
        The task id, or None when the slot was claimed before (or the lease was lost).
    """
    task_id = runs.slot_task_id(job.name, slot)
    arguments = contracts.validate_arguments(
        job.task, contracts.PeriodicArgs, {"job": job.name, "slot": slot}
    )
    with engine.begin() as connection:
        if not runs.claim_slot(connection, job.name, slot, task_id, sent_by, fenced=fenced):
            return None
        outbox.write(
            connection,
            job.task,
            arguments,
            task_id=task_id,
            headers=headers,
            expires_at=slot + timedelta(seconds=job.expires_seconds),
        )
    return task_id


def relay(engine: Engine, jobs: Sequence[Job]) -> int:
    """Publish every committed, unsent task of ``jobs`` from the outbox; return how many.

    Stops at the first publish the broker refused (the row keeps the error and
    the next call tries again).
    """
    names = {job.task for job in jobs}
    total = 0
    while (sent := outbox.relay_once(engine, task_names=names)) == outbox.BATCH:
        total += sent
    return total + sent


def refuse_conf_schedule(app: Celery) -> None:
    """Refuse Celery's own ``beat_schedule``: this scheduler would never send its entries.

    Raises:
        ImproperlyConfigured: naming the entries and where periodic jobs go.
    """
    entries = dict(app.conf.beat_schedule or {})
    if entries:
        raise ImproperlyConfigured(
            f"beat_schedule has entries ({', '.join(sorted(entries))}) that this fleet's beat would "
            "never send: add each as a Job(name, task, cron) to SCHEDULE in app/maintenance/schedule.py "
            "(or the module MAINTENANCE_SCHEDULE names), with a task that takes job and slot, "
            "and leave celery_app.conf.beat_schedule empty"
        )


class LeaderScheduler(Scheduler):
    """A Celery beat scheduler that sends only while it holds the PostgreSQL lease."""

    def __init__(self, app: Celery, *args: Any, **kwargs: Any) -> None:
        refuse_conf_schedule(app)
        settings = get_settings()
        self.jobs = load_schedule(settings.maintenance_schedule)
        self.lease_seconds = settings.beat_lease_seconds
        self.database_url = settings.database_url
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: None until the first tick, so the first state is always logged.
        self.leading: bool | None = None
        #: True while a tick claims and relays (a stop then leaves the relay to the next leader).
        self.busy = False
        super().__init__(app, *args, **kwargs)

    @property
    def renew_every(self) -> float:
        """Seconds between lease renewals (a third of the lease)."""
        return self.lease_seconds / 3

    @property
    def engine(self) -> Engine:
        """The domain database engine of this process."""
        return engine_for(self.database_url)

    def setup_schedule(self) -> None:
        """Celery's entries stay empty: the jobs are data (``MAINTENANCE_SCHEDULE``)."""
        self.data: dict[str, Any] = {}

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Renew or take the lease; as leader, send every due slot.

        Returns:
            Seconds until the next renewal or slot, whichever comes first.
        """
        try:
            lease = runs.hold_lease(self.engine, self.holder, self.lease_seconds)
        except SQLAlchemyError as exc:
            self._lead(False, f"database error ({type(exc).__name__}), sending nothing")
            return self.renew_every
        self._lead(lease.leader, f"leader is {lease.holder}")
        if not lease.leader:
            return self.renew_every
        now = lease.now
        self.busy = True
        try:
            for job in self.jobs:
                try:
                    self.send_due(job, now)
                except Exception:
                    log.exception("beat: claiming %s failed; retrying next tick", job.name)
            self._relay()
        finally:
            self.busy = False
        renewal = now + timedelta(seconds=self.renew_every)
        next_event = min((job.next_slot(now) for job in self.jobs), default=renewal)
        return max(0.01, min(self.renew_every, (next_event - now).total_seconds()))

    def send_due(self, job: Job, now: datetime) -> None:
        """Claim each due slot of ``job`` that no run records yet, oldest first (a new job: its latest)."""
        due = job.due_slots(now)
        if not due:
            return
        first = runs.first_slot(self.engine, job.name)
        # A new job starts at its latest slot, not with a backlog; none older than its first run.
        due = due[-1:] if first is None else [slot for slot in due if slot >= first]
        done = runs.recorded_slots(self.engine, job.name, due[0]) if due else set()
        for slot in due:
            if slot in done:
                continue
            task_id = send_slot(self.engine, job, slot, self.holder, headers=BEAT_HEADERS)
            if task_id is None:
                log.warning("beat: lost the lease before claiming %s %s", job.name, slot.isoformat())
                return
            log.info("beat: sent %s slot %s as %s[%s]", job.name, slot.isoformat(), job.task, task_id)

    def _relay(self) -> None:
        try:
            if published := relay(self.engine, self.jobs):
                log.info("beat: published %d claimed slot(s)", published)
        except SQLAlchemyError as exc:
            log.warning(
                "beat: relaying claimed slots failed (%s); they wait in the outbox", type(exc).__name__
            )

    def _lead(self, leading: bool, why: str) -> None:
        if leading != self.leading:
            if leading:
                log.info("beat: leading as %s", self.holder)
            else:
                log.info("beat: standby as %s; %s", self.holder, why)
        self.leading = leading
        metrics.BEAT_LEADER.set(1 if leading else 0)

    def close(self) -> None:
        """Relay what this leader claimed, hand the lease over at once, then close publishing.

        Celery calls this from its SIGTERM handler, on top of whatever the tick was
        doing: in the middle of a tick (its rows locked, a publish half done) it
        relays nothing, and the next leader relays what was claimed.
        """
        if self.leading:
            if not self.busy:
                self._relay()
            try:
                runs.release_lease(self.engine, self.holder)
                log.info("beat: released the lease")
            except SQLAlchemyError:
                log.warning("beat: could not release the lease; it expires in %s s", self.lease_seconds)
            self._lead(False, "stopping")
        super().close()

    @property
    def info(self) -> str:
        """Shown in beat's start-up banner."""
        names = ", ".join(job.name for job in self.jobs)
        return f"    . lease -> {self.lease_seconds:g}s as {self.holder}\n    . jobs -> {names}"
