"""Imported bookings name their import, so the import's last step can notify their holders.

Revision ID: 0010_imported_bookings
Revises: 0009_result_extended
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_imported_bookings"
down_revision = "0009_result_extended"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``bookings.import_id`` (null for bookings made through the API) and its index."""
    op.add_column(
        "bookings",
        sa.Column("import_id", sa.BigInteger, sa.ForeignKey("booking_imports.id", ondelete="SET NULL")),
    )
    op.create_index(
        "ix_bookings_import_id", "bookings", ["import_id"], postgresql_where=sa.text("import_id IS NOT NULL")
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_bookings_import_id", table_name="bookings")
    op.drop_column("bookings", "import_id")
