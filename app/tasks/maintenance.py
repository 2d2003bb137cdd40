"""Periodic maintenance tasks (queue ``maintenance``, prefork, one process)."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from app import contracts
from app.celery_app import celery_app
from app.maintenance import service
from app.tasks import resources
from app.tasks.base import FleetTask


@celery_app.task(
    bind=True,
    base=FleetTask,
    name=contracts.CLEANUP_OLD_SESSIONS,
    arguments=contracts.NoArgs,
    autoretry_for=(OperationalError,),
)
def cleanup_old_sessions(self: FleetTask) -> str:
    """Delete sessions older than seven days."""
    count = service.cleanup_old_sessions(resources.engine())
    return f"Cleaned up {count} expired sessions"
