"""SQLAlchemy table definitions: the schema the migrations create, in one metadata."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
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
    # Extended results only (RESULT_EXTENDED): arguments (secret fields redacted), worker, retries, queue.
    Column("args", JSONB),
    Column("kwargs", JSONB),
    Column("worker", String(155)),
    Column("retries", Integer),
    Column("queue", String(155)),
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

#: One row per chord: its header's size, how many header tasks were counted, and
#: when the task that completed it published the body (``app.result_backend.chords``).
chord_counters = Table(
    "chord_counters",
    metadata,
    Column("group_id", String(155), primary_key=True),
    Column("size", Integer, nullable=False),
    Column("done", Integer, nullable=False, server_default=text("0")),
    Column("fired_at", DateTime(timezone=True)),
    Column("date_done", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_chord_counters_date_done", "date_done"),
)

#: One row per header task counted towards its chord: a redelivered task is counted once.
chord_parts = Table(
    "chord_parts",
    metadata,
    Column(
        "group_id", String(155), ForeignKey("chord_counters.group_id", ondelete="CASCADE"), primary_key=True
    ),
    Column("task_id", String(155), primary_key=True),
)

#: Who waits for which task's result (``AsyncResult.get()`` by LISTEN/NOTIFY): the store
#: announces a result only when a row names it. A waiter that died leaves rows the cleanup removes.
result_waiters = Table(
    "result_waiters",
    metadata,
    Column("task_id", String(155), primary_key=True),
    Column("waiter", String(64), primary_key=True),
    Column("since", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

#: One row per cancelled task (``magnetiq task cancel``, ``app.producer.cancel``): workers load
#: them at start and poll for new ones (``seq``), skip the task when it arrives and record REVOKED.
task_cancellations = Table(
    "task_cancellations",
    metadata,
    Column("task_id", String(155), primary_key=True),
    Column("seq", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("cancelled_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

#: One row per shared send rate (``app.mail.throttle``): ``all``, ``domain:<domain>``; ``tat``
#: is the earliest time the key's next email may start (the generic cell rate algorithm).
send_rates = Table(
    "send_rates",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("tat", DateTime(timezone=True), nullable=False),
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

#: Payments; ``status`` moves from ``pending`` to ``processed`` (charged) exactly once,
#: then perhaps to ``refunded``; a declined charge ends ``failed``.
payments = Table(
    "payments",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("amount_cents", Integer, nullable=False),
    Column("currency", String(3), nullable=False, server_default=text("'EUR'")),
    Column("status", String(20), nullable=False, server_default=text("'pending'")),
    Column("processed_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("booking_id", BigInteger, ForeignKey("bookings.id")),
    #: The key the provider deduplicates charges by: one payment, one charge.
    Column("idempotency_key", String(200)),
    Column("provider_reference", String(100)),
    Column("failure_reason", String(200)),
    Column("refund_reference", String(100)),
    Column("refunded_at", DateTime(timezone=True)),
    Column("reconciled_at", DateTime(timezone=True)),
    CheckConstraint("amount_cents > 0", name="amount_positive"),
    CheckConstraint("status IN ('pending', 'processed', 'failed', 'refunded')", name="status_known"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
    UniqueConstraint("idempotency_key"),
    UniqueConstraint("provider_reference"),
    UniqueConstraint("booking_id"),
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
    #: The beat lease holder that sent the slot (or who ran it by hand); NULL when
    #: the task recorded a run whose send was never committed.
    Column("sent_by", String(200)),
    Column("sent_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("detail", JSONB),
    PrimaryKeyConstraint("job", "slot"),
    CheckConstraint("status IN ('sent', 'started', 'succeeded', 'failed')", name="status_known"),
)

#: People who book; the product's users, keyed by email for imports.
users = Table(
    "users",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("email", String(254), nullable=False),
    Column("name", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("email"),
)

#: Bookable things (rooms, desks, people); each has its own calendar feed.
resources = Table(
    "resources",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("name"),
)

#: A resource's bookable intervals; at most one confirmed booking each.
time_slots = Table(
    "time_slots",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("resource_id", BigInteger, ForeignKey("resources.id"), nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("resource_id", "starts_at", name="uq_time_slots_resource_start"),
    CheckConstraint("ends_at > starts_at", name="ends_after_start"),
    Index("ix_time_slots_starts_at", "starts_at"),
)

#: Bookings: ``pending`` -> ``confirmed`` -> ``cancelled`` / ``expired`` (a pending one may
#: also be cancelled or expire). ``reference`` is the producer's idempotency key.
bookings = Table(
    "bookings",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("reference", String(64), nullable=False),
    Column("user_id", BigInteger, ForeignKey("users.id"), nullable=False),
    Column("slot_id", BigInteger, ForeignKey("time_slots.id"), nullable=False),
    Column("status", String(20), nullable=False, server_default=text("'pending'")),
    Column("source", String(20), nullable=False, server_default=text("'api'")),
    Column("status_reason", String(100)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("confirmed_at", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
    Column("confirmation_queued_at", DateTime(timezone=True)),
    Column("reminder_queued_at", DateTime(timezone=True)),
    Column("cancellation_queued_at", DateTime(timezone=True)),
    #: The CSV import that booked it (``source = 'import'``).
    Column("import_id", BigInteger, ForeignKey("booking_imports.id", ondelete="SET NULL")),
    UniqueConstraint("reference"),
    CheckConstraint("status IN ('pending', 'confirmed', 'cancelled', 'expired')", name="status_known"),
    CheckConstraint("status <> 'confirmed' OR confirmed_at IS NOT NULL", name="confirmed_has_time"),
    CheckConstraint("source IN ('api', 'import')", name="source_known"),
    # The database, not Python, refuses a second confirmed booking of one slot.
    Index(
        "uq_bookings_confirmed_slot", "slot_id", unique=True, postgresql_where=text("status = 'confirmed'")
    ),
    Index("ix_bookings_status_created_at", "status", "created_at"),
    Index("ix_bookings_user_id", "user_id"),
    Index("ix_bookings_import_id", "import_id", postgresql_where=text("import_id IS NOT NULL")),
)

#: CSV files of bookings uploaded by staff, imported by ``import_bookings``.
booking_imports = Table(
    "booking_imports",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("filename", String(255), nullable=False),
    Column("content", Text, nullable=False),
    Column("status", String(20), nullable=False, server_default=text("'uploaded'")),
    Column("total_rows", Integer),
    Column("chunk_count", Integer),
    Column("imported_rows", Integer),
    Column("error_rows", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    CheckConstraint("status IN ('uploaded', 'importing', 'completed')", name="status_known"),
)

#: One row per chunk of valid rows; ``done`` once its bookings are in.
booking_import_chunks = Table(
    "booking_import_chunks",
    metadata,
    Column("import_id", BigInteger, ForeignKey("booking_imports.id", ondelete="CASCADE"), nullable=False),
    Column("chunk", Integer, nullable=False),
    Column("lines", JSONB, nullable=False),
    Column("status", String(20), nullable=False, server_default=text("'pending'")),
    Column("imported", Integer),
    PrimaryKeyConstraint("import_id", "chunk"),
    CheckConstraint("status IN ('pending', 'done')", name="status_known"),
)

#: Per-row problems of an import (validation or conflicts), by CSV line number.
booking_import_errors = Table(
    "booking_import_errors",
    metadata,
    Column("import_id", BigInteger, ForeignKey("booking_imports.id", ondelete="CASCADE"), nullable=False),
    Column("line", Integer, nullable=False),
    Column("message", Text, nullable=False),
    PrimaryKeyConstraint("import_id", "line"),
)

#: The transactional outbox: a producer (or beat, claiming a slot) writes a task here in
#: its own transaction; the relay publishes committed rows (with confirms) and stamps ``sent_at``.
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
    #: Message headers to publish with (beat marks its slots), or NULL.
    Column("headers", JSONB),
    #: The message expires unstarted at this moment (a periodic slot's grace), or never.
    Column("expires_at", DateTime(timezone=True)),
    Index("ix_task_outbox_unsent", "id", postgresql_where=text("sent_at IS NULL")),
)
