"""Maintenance jobs on the domain database."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, delete, func

from app.schema import sessions

#: Sessions older than this are deleted by the daily cleanup.
SESSION_MAX_AGE = timedelta(days=7)


def cleanup_old_sessions(engine: Engine, max_age: timedelta = SESSION_MAX_AGE) -> int:
    """Delete sessions created more than ``max_age`` ago.

    Returns:
        How many sessions were deleted.
    """
    with engine.begin() as connection:
        result = connection.execute(delete(sessions).where(sessions.c.created_at < func.now() - max_age))
    return result.rowcount
