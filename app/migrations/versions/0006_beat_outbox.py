"""Beat's slots go through the outbox: an outbox row may carry message headers and an expiry.

Revision ID: 0006_beat_outbox
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006_beat_outbox"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``headers`` and ``expires_at`` to ``task_outbox`` (both optional)."""
    op.add_column("task_outbox", sa.Column("headers", JSONB))
    op.add_column("task_outbox", sa.Column("expires_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    """Drop the two columns."""
    op.drop_column("task_outbox", "expires_at")
    op.drop_column("task_outbox", "headers")
