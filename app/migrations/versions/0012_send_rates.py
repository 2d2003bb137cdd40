"""Shared send rates: the fleet-wide and per-domain email limits keep their state here.

Revision ID: 0012_send_rates
Revises: 0011_task_cancellations
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_send_rates"
down_revision = "0011_task_cancellations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``send_rates``: one row per limited key, its next due time."""
    op.create_table(
        "send_rates",
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("tat", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_send_rates"),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("send_rates")
