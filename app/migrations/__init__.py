"""Alembic migrations: every schema change to the fleet's PostgreSQL database."""
