"""Cancelled tasks: a row per task id that workers skip when it reaches them.

Revision ID: 0011_task_cancellations
Revises: 0010_imported_bookings
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_task_cancellations"
down_revision = "0010_imported_bookings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``task_cancellations``; ``seq`` orders them for the workers' polls."""
    op.create_table(
        "task_cancellations",
        sa.Column("task_id", sa.String(155), nullable=False),
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("task_id", name="pk_task_cancellations"),
        sa.UniqueConstraint("seq", name="uq_task_cancellations_seq"),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("task_cancellations")
