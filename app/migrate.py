"""Database set-up: create the database when missing, then run the migrations."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from app.settings import sqlalchemy_url

log = logging.getLogger(__name__)

#: The project's alembic.ini, beside the app package in a checkout.
ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def alembic_config(url: str) -> Config:
    """Return an Alembic config that migrates ``url``."""
    config = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.exists() else Config()
    config.set_main_option("script_location", "app:migrations")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist.

    Returns:
        True when the database was created.
    """
    target = make_url(url)
    probe = create_engine(target)
    try:
        with probe.connect():
            return False
    except OperationalError as exc:
        if "does not exist" not in str(exc.orig):
            raise
    finally:
        probe.dispose()
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
            ).scalar()
            if exists:
                return False
            quoted = connection.dialect.identifier_preparer.quote(target.database or "")
            connection.exec_driver_sql(f"CREATE DATABASE {quoted}")
            log.info("created database %s", target.database)
            return True
    finally:
        admin.dispose()


def upgrade(url: str) -> None:
    """Create the database if needed and migrate it to the newest revision."""
    url = sqlalchemy_url(url)
    try:
        ensure_database(url)
    except OperationalError as exc:
        reason = " ".join(str(exc.orig).split())
        raise ConnectionError(reason) from exc
    command.upgrade(alembic_config(url), "head")
