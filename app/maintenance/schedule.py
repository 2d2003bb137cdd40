"""The beat schedule as data: job name, task name, cron expression (UTC)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    """One periodic job."""

    #: Unique, stable job name (beat keys its state on it).
    name: str
    #: Dotted task name, published by name.
    task: str
    #: Five-field cron expression in UTC.
    cron: str
    #: Seconds after which an unstarted run is discarded (a stale duplicate).
    expires_seconds: int = 3600


SCHEDULE: tuple[Job, ...] = (
    Job("cleanup-old-sessions", "app.tasks.maintenance.cleanup_old_sessions", "15 3 * * *"),
)
