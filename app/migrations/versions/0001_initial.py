"""Result backend tables, sessions and payments.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the result tables (indexed for expiry) and the first domain tables."""
    op.create_table(
        "task_results",
        sa.Column("task_id", sa.String(155), primary_key=True),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("task_name", sa.String(255)),
        sa.Column("result", JSONB),
        sa.Column("traceback", sa.Text),
        sa.Column("children", JSONB),
        sa.Column("date_done", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_task_results_date_done", "task_results", ["date_done"])
    op.create_table(
        "group_results",
        sa.Column("group_id", sa.String(155), primary_key=True),
        sa.Column("result", JSONB, nullable=False),
        sa.Column("date_done", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_group_results_date_done", "group_results", ["date_done"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_sessions_created_at", "sessions", ["created_at"])
    op.create_table(
        "payments",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("amount_cents", sa.Integer, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False, server_default=sa.text("'EUR'")),
        sa.Column("status", sa.String(20), nullable=False, server_default=sa.text("'pending'")),
        sa.Column("processed_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("amount_cents > 0", name="ck_payments_amount_positive"),
        sa.CheckConstraint(
            "status IN ('pending', 'processed', 'failed', 'refunded')", name="ck_payments_status_known"
        ),
    )


def downgrade() -> None:
    """Drop everything this revision created."""
    for table in ("payments", "sessions", "group_results", "task_results"):
        op.drop_table(table)
