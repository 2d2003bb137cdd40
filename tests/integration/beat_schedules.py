"""Per-second schedules, so tests with real beat processes take seconds (``MAINTENANCE_SCHEDULE``)."""

from __future__ import annotations

from app.contracts import CLEANUP_OLD_SESSIONS, REPORT_DEAD_LETTERS
from app.maintenance.schedule import Job

#: One job every second, missed slots still sent within 120 s.
EVERY_SECOND = (Job("tick", CLEANUP_OLD_SESSIONS, "* * * * * *", expires_seconds=120),)
#: One job every third second, and one every second.
TWO_JOBS = (
    Job("every-3s", CLEANUP_OLD_SESSIONS, "* * * * * */3", expires_seconds=120),
    Job("every-1s", REPORT_DEAD_LETTERS, "* * * * * *", expires_seconds=120),
)
