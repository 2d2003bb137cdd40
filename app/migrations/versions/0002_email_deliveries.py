"""Email deliveries: one row per idempotency key, so an email is sent once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``email_deliveries``."""
    op.create_table(
        "email_deliveries",
        sa.Column("idempotency_key", sa.String(200), primary_key=True),
        sa.Column("template", sa.String(50), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("task_id", sa.String(155)),
        sa.Column("status", sa.String(20), nullable=False, server_default=sa.text("'pending'")),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed')", name="ck_email_deliveries_status_known"
        ),
    )
    op.create_index("ix_email_deliveries_created_at", "email_deliveries", ["created_at"])


def downgrade() -> None:
    """Drop ``email_deliveries``."""
    op.drop_table("email_deliveries")
