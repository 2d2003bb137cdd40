"""Migration 0004 (the booking domain) goes down to 0003 and back up to the schema module."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from app.migrate import alembic_config
from app.schema import metadata
from app.settings import get_settings

BOOKING_TABLES = {"users", "resources", "time_slots", "bookings", "booking_imports"}


def test_booking_migration_downgrades_and_upgrades_again(database: Any) -> None:
    config = alembic_config(get_settings().database_url)

    command.downgrade(config, "0003")
    try:
        schema = inspect(database)
        assert not BOOKING_TABLES & set(schema.get_table_names())
        assert "idempotency_key" not in {c["name"] for c in schema.get_columns("payments")}
    finally:
        command.upgrade(config, "head")

    with database.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
