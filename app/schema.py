"""SQLAlchemy table definitions: the schema the migrations create, in one metadata."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: One row per task id: the Celery result backend's storage.
task_results = Table(
    "task_results",
    metadata,
    Column("task_id", String(155), primary_key=True),
    Column("status", String(50), nullable=False),
    Column("task_name", String(255)),
    Column("result", JSONB),
    Column("traceback", Text),
    Column("children", JSONB),
    Column("date_done", DateTime(timezone=True)),
    Index("ix_task_results_date_done", "date_done"),
)

#: One row per saved group (``GroupResult.save()``, chords).
group_results = Table(
    "group_results",
    metadata,
    Column("group_id", String(155), primary_key=True),
    Column("result", JSONB, nullable=False),
    Column("date_done", DateTime(timezone=True), nullable=False),
    Index("ix_group_results_date_done", "date_done"),
)

#: Web sessions of the FastAPI product; maintenance expires old ones.
sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_sessions_created_at", "created_at"),
)

#: Payments; ``status`` moves from ``pending`` to ``processed`` exactly once.
payments = Table(
    "payments",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("amount_cents", Integer, nullable=False),
    Column("currency", String(3), nullable=False, server_default=text("'EUR'")),
    Column("status", String(20), nullable=False, server_default=text("'pending'")),
    Column("processed_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount_cents > 0", name="amount_positive"),
    CheckConstraint("status IN ('pending', 'processed', 'failed', 'refunded')", name="status_known"),
)

#: One row per email the fleet has been asked to send, keyed by its idempotency
#: key: a redelivered or retried task finds ``sent`` here and sends nothing.
email_deliveries = Table(
    "email_deliveries",
    metadata,
    Column("idempotency_key", String(200), primary_key=True),
    Column("template", String(50), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("task_id", String(155)),
    Column("status", String(20), nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True)),
    CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed')", name="status_known"),
    Index("ix_email_deliveries_created_at", "created_at"),
)

#: Leases that elect one leader among beat replicas (one row per lease name).
beat_leases = Table(
    "beat_leases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("renewed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

#: One row per (periodic job, schedule slot): beat sends a slot once, the job runs it once.
periodic_runs = Table(
    "periodic_runs",
    metadata,
    Column("job", String(100), nullable=False),
    Column("slot", DateTime(timezone=True), nullable=False),
    Column("task_id", String(155)),
    Column("status", String(20), nullable=False, server_default=text("'sent'")),
    Column("sent_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("detail", JSONB),
    PrimaryKeyConstraint("job", "slot"),
    CheckConstraint("status IN ('sent', 'started', 'succeeded', 'failed')", name="status_known"),
)

#: The transactional outbox: a producer writes a task here in its own transaction;
#: the relay publishes committed rows (with confirms) and stamps ``sent_at``.
task_outbox = Table(
    "task_outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("task_id", String(155), nullable=False, unique=True),
    Column("task_name", String(255), nullable=False),
    Column("kwargs", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    Index("ix_task_outbox_unsent", "id", postgresql_where=text("sent_at IS NULL")),
)
