"""Beat coordination: the leader lease and one row per (job, slot) run.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``beat_leases`` and ``periodic_runs``."""
    op.create_table(
        "beat_leases",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "periodic_runs",
        sa.Column("job", sa.String(100), nullable=False),
        sa.Column("slot", sa.DateTime(timezone=True), nullable=False),
        sa.Column("task_id", sa.String(155)),
        sa.Column("status", sa.String(20), nullable=False, server_default=sa.text("'sent'")),
        sa.Column("sent_by", sa.String(200)),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("detail", JSONB),
        sa.PrimaryKeyConstraint("job", "slot", name="pk_periodic_runs"),
        sa.CheckConstraint(
            "status IN ('sent', 'started', 'succeeded', 'failed')", name="ck_periodic_runs_status_known"
        ),
    )


def downgrade() -> None:
    """Drop the beat tables."""
    op.drop_table("periodic_runs")
    op.drop_table("beat_leases")
