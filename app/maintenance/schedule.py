"""The beat schedule as data (job, task, cron in UTC) and the slots each cron expression yields."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from croniter import croniter

#: The schedule beat and ``magnetiq schedule`` use unless ``MAINTENANCE_SCHEDULE`` names another.
DEFAULT_SCHEDULE = "app.maintenance.schedule:SCHEDULE"
#: The most slots one job may have due at once (a per-second cron with a long grace).
MAX_DUE_SLOTS = 1000


@dataclass(frozen=True)
class Job:
    """One periodic job: a task published once per slot of its cron expression."""

    #: Unique, stable job name; runs are recorded per (job, slot).
    name: str
    #: Dotted task name, published by name with ``job`` and ``slot`` keyword arguments.
    task: str
    #: Cron expression in UTC: five fields, or six with seconds last (``* * * * * */2``).
    cron: str
    #: Grace after a slot: beat still sends a missed slot this long after it (a restart or
    #: failover), and the message expires unstarted at the same moment.
    expires_seconds: int = 3600

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.cron):
            raise ValueError(f"job {self.name!r}: invalid cron expression {self.cron!r}")
        if self.expires_seconds <= 0:
            raise ValueError(f"job {self.name!r}: expires_seconds must be positive")

    def next_slot(self, now: datetime) -> datetime:
        """Return the first slot strictly after ``now``."""
        following: datetime = croniter(self.cron, now).get_next(datetime)
        return following

    def due_slots(self, now: datetime) -> list[datetime]:
        """Return the slots still within their grace at ``now``, oldest first.

        A slot ``s`` is due while ``s <= now < s + expires_seconds``: beat sends
        each of them that no run records yet, so a restart or a failover within
        the grace sends the missed slots late instead of skipping them.
        """
        horizon = now - timedelta(seconds=self.expires_seconds)
        slots: list[datetime] = []
        # croniter's get_prev is strictly before its start: start a microsecond later.
        walker = croniter(self.cron, now + timedelta(microseconds=1))
        while len(slots) < MAX_DUE_SLOTS:
            slot: datetime = walker.get_prev(datetime)
            if slot <= horizon:
                break
            slots.append(slot)
        return slots[::-1]


SCHEDULE: tuple[Job, ...] = (
    Job("cleanup-old-sessions", "app.tasks.maintenance.cleanup_old_sessions", "15 3 * * *"),
    Job("expire-results", "app.tasks.maintenance.expire_results", "0 4 * * *"),
    Job("report-dead-letters", "app.tasks.maintenance.report_dead_letters", "5 * * * *", 1800),
    Job("expire-pending-bookings", "app.tasks.maintenance.expire_pending_bookings", "*/5 * * * *", 240),
    Job("send-tomorrows-reminders", "app.tasks.maintenance.send_tomorrows_reminders", "0 18 * * *", 10800),
)


def load_schedule(spec: str = DEFAULT_SCHEDULE) -> tuple[Job, ...]:
    """Import a schedule named ``module:attribute`` (a sequence of ``Job``).

    Raises:
        ValueError: when the spec is malformed, names no sequence of jobs, or
            repeats a job name.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"schedule {spec!r} must look like 'package.module:NAME'")
    try:
        jobs = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"schedule {spec!r} cannot be loaded: {exc}") from exc
    if not isinstance(jobs, Sequence) or not all(isinstance(job, Job) for job in jobs):
        raise ValueError(f"schedule {spec!r} is not a sequence of Job")
    names = [job.name for job in jobs]
    if len(names) != len(set(names)):
        raise ValueError(f"schedule {spec!r} repeats a job name")
    return tuple(jobs)


def find_job(jobs: Sequence[Job], name: str) -> Job:
    """Return the job called ``name``.

    Raises:
        KeyError: naming the job and listing the known ones.
    """
    for job in jobs:
        if job.name == name:
            return job
    raise KeyError(f"no job {name!r}; known: {', '.join(job.name for job in jobs)}")
