"""Transactional outbox: tasks written in the producer's transaction, relayed after commit.

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``task_outbox`` with a partial index on the rows still to send."""
    op.create_table(
        "task_outbox",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(155), nullable=False),
        sa.Column("task_name", sa.String(255), nullable=False),
        sa.Column("kwargs", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text),
        sa.UniqueConstraint("task_id", name="uq_task_outbox_task_id"),
    )
    op.create_index(
        "ix_task_outbox_unsent", "task_outbox", ["id"], postgresql_where=sa.text("sent_at IS NULL")
    )


def downgrade() -> None:
    """Drop the outbox."""
    op.drop_table("task_outbox")
