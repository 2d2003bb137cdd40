"""Result waits by LISTEN/NOTIFY: who waits for which task's result.

Revision ID: 0008_result_waiters
Revises: 0007_chords
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_result_waiters"
down_revision = "0007_chords"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``result_waiters``: a row per (task, waiting connection) while the wait lasts."""
    op.create_table(
        "result_waiters",
        sa.Column("task_id", sa.String(155), primary_key=True),
        sa.Column("waiter", sa.String(64), primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    """Drop the table."""
    op.drop_table("result_waiters")
