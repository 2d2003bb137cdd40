"""Extended results: a result may keep its task's arguments, worker, retries and queue.

Revision ID: 0009_result_extended
Revises: 0008_result_waiters
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009_result_extended"
down_revision = "0008_result_waiters"
branch_labels = None
depends_on = None

COLUMNS = ("args", "kwargs", "worker", "retries", "queue")


def upgrade() -> None:
    """Add the five columns, empty unless ``RESULT_EXTENDED`` is on."""
    op.add_column("task_results", sa.Column("args", JSONB))
    op.add_column("task_results", sa.Column("kwargs", JSONB))
    op.add_column("task_results", sa.Column("worker", sa.String(155)))
    op.add_column("task_results", sa.Column("retries", sa.Integer))
    op.add_column("task_results", sa.Column("queue", sa.String(155)))


def downgrade() -> None:
    """Drop them."""
    for column in reversed(COLUMNS):
        op.drop_column("task_results", column)
