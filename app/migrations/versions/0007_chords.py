"""Native chords on the result backend: a counter per chord, a row per header task counted.

Revision ID: 0007_chords
Revises: 0006_beat_outbox
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_chords"
down_revision = "0006_beat_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``chord_counters`` and ``chord_parts`` (a part is deleted with its chord)."""
    op.create_table(
        "chord_counters",
        sa.Column("group_id", sa.String(155), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("done", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("fired_at", sa.DateTime(timezone=True)),
        sa.Column("date_done", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_chord_counters_date_done", "chord_counters", ["date_done"])
    op.create_table(
        "chord_parts",
        sa.Column(
            "group_id",
            sa.String(155),
            sa.ForeignKey("chord_counters.group_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("task_id", sa.String(155), primary_key=True),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("chord_parts")
    op.drop_index("ix_chord_counters_date_done", table_name="chord_counters")
    op.drop_table("chord_counters")
