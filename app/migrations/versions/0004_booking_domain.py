"""Booking domain: users, resources, time slots, bookings, imports; payments get keys.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _created_at() -> sa.Column[object]:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    """Create the booking tables and extend ``payments``."""
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        _created_at(),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    op.create_table(
        "resources",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        _created_at(),
        sa.UniqueConstraint("name", name="uq_resources_name"),
    )
    op.create_table(
        "time_slots",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column(
            "resource_id",
            sa.BigInteger,
            sa.ForeignKey("resources.id", name="fk_time_slots_resource_id_resources"),
            nullable=False,
        ),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("resource_id", "starts_at", name="uq_time_slots_resource_start"),
        sa.CheckConstraint("ends_at > starts_at", name="ck_time_slots_ends_after_start"),
    )
    op.create_index("ix_time_slots_starts_at", "time_slots", ["starts_at"])
    _create_bookings()
    _extend_payments()
    _create_imports()


def _create_bookings() -> None:
    op.create_table(
        "bookings",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("reference", sa.String(64), nullable=False),
        sa.Column(
            "user_id",
            sa.BigInteger,
            sa.ForeignKey("users.id", name="fk_bookings_user_id_users"),
            nullable=False,
        ),
        sa.Column(
            "slot_id",
            sa.BigInteger,
            sa.ForeignKey("time_slots.id", name="fk_bookings_slot_id_time_slots"),
            nullable=False,
        ),
        sa.Column("status", sa.String(20), nullable=False, server_default=sa.text("'pending'")),
        sa.Column("source", sa.String(20), nullable=False, server_default=sa.text("'api'")),
        sa.Column("status_reason", sa.String(100)),
        _created_at(),
        sa.Column("confirmed_at", sa.DateTime(timezone=True)),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.Column("confirmation_queued_at", sa.DateTime(timezone=True)),
        sa.Column("reminder_queued_at", sa.DateTime(timezone=True)),
        sa.Column("cancellation_queued_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("reference", name="uq_bookings_reference"),
        sa.CheckConstraint(
            "status IN ('pending', 'confirmed', 'cancelled', 'expired')", name="ck_bookings_status_known"
        ),
        sa.CheckConstraint(
            "status <> 'confirmed' OR confirmed_at IS NOT NULL", name="ck_bookings_confirmed_has_time"
        ),
        sa.CheckConstraint("source IN ('api', 'import')", name="ck_bookings_source_known"),
    )
    op.create_index(
        "uq_bookings_confirmed_slot",
        "bookings",
        ["slot_id"],
        unique=True,
        postgresql_where=sa.text("status = 'confirmed'"),
    )
    op.create_index("ix_bookings_status_created_at", "bookings", ["status", "created_at"])
    op.create_index("ix_bookings_user_id", "bookings", ["user_id"])


def _extend_payments() -> None:
    op.add_column(
        "payments",
        sa.Column(
            "booking_id", sa.BigInteger, sa.ForeignKey("bookings.id", name="fk_payments_booking_id_bookings")
        ),
    )
    for name, length in (
        ("idempotency_key", 200),
        ("provider_reference", 100),
        ("failure_reason", 200),
        ("refund_reference", 100),
    ):
        op.add_column("payments", sa.Column(name, sa.String(length)))
    for name in ("refunded_at", "reconciled_at"):
        op.add_column("payments", sa.Column(name, sa.DateTime(timezone=True)))
    op.create_check_constraint("ck_payments_currency_iso", "payments", "currency ~ '^[A-Z]{3}$'")
    for column in ("idempotency_key", "provider_reference", "booking_id"):
        op.create_unique_constraint(f"uq_payments_{column}", "payments", [column])


def _create_imports() -> None:
    op.create_table(
        "booking_imports",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default=sa.text("'uploaded'")),
        sa.Column("total_rows", sa.Integer),
        sa.Column("chunk_count", sa.Integer),
        sa.Column("imported_rows", sa.Integer),
        sa.Column("error_rows", sa.Integer),
        _created_at(),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "status IN ('uploaded', 'importing', 'completed')", name="ck_booking_imports_status_known"
        ),
    )
    parent = {"ondelete": "CASCADE"}
    op.create_table(
        "booking_import_chunks",
        sa.Column(
            "import_id",
            sa.BigInteger,
            sa.ForeignKey(
                "booking_imports.id", name="fk_booking_import_chunks_import_id_booking_imports", **parent
            ),
            nullable=False,
        ),
        sa.Column("chunk", sa.Integer, nullable=False),
        sa.Column("lines", JSONB, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default=sa.text("'pending'")),
        sa.Column("imported", sa.Integer),
        sa.PrimaryKeyConstraint("import_id", "chunk", name="pk_booking_import_chunks"),
        sa.CheckConstraint("status IN ('pending', 'done')", name="ck_booking_import_chunks_status_known"),
    )
    op.create_table(
        "booking_import_errors",
        sa.Column(
            "import_id",
            sa.BigInteger,
            sa.ForeignKey(
                "booking_imports.id", name="fk_booking_import_errors_import_id_booking_imports", **parent
            ),
            nullable=False,
        ),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("import_id", "line", name="pk_booking_import_errors"),
    )


def downgrade() -> None:
    """Drop the booking tables and the new ``payments`` columns."""
    op.drop_table("booking_import_errors")
    op.drop_table("booking_import_chunks")
    op.drop_table("booking_imports")
    for column in ("idempotency_key", "provider_reference", "booking_id"):
        op.drop_constraint(f"uq_payments_{column}", "payments", type_="unique")
    op.drop_constraint("ck_payments_currency_iso", "payments", type_="check")
    for name in (
        "booking_id",
        "idempotency_key",
        "provider_reference",
        "failure_reason",
        "refund_reference",
        "refunded_at",
        "reconciled_at",
    ):
        op.drop_column("payments", name)
    for table in ("bookings", "time_slots", "resources", "users"):
        op.drop_table(table)
