"""PostgreSQL refusing the mail ledger's ``sent`` mark: a real trigger on ``email_deliveries``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text

_CREATE = (
    "CREATE SEQUENCE IF NOT EXISTS test_sent_mark_refusals",
    "SELECT setval('test_sent_mark_refusals', 1, false)",
    # nextval() is not rolled back with the refused statement: it counts the refusals.
    "CREATE OR REPLACE FUNCTION test_refuse_sent_mark() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN PERFORM nextval('test_sent_mark_refusals'); "
    "RAISE EXCEPTION 'sent mark refused by the test'; END $$",
    "CREATE TRIGGER test_refuse_sent_mark BEFORE UPDATE ON email_deliveries FOR EACH ROW "
    "WHEN (NEW.status = 'sent') EXECUTE FUNCTION test_refuse_sent_mark()",
)


class SentMarkRefusal:
    """While active, every statement that marks an email ``sent`` is refused by the database."""

    def __init__(self, database: Any) -> None:
        self._database = database

    def refusals(self) -> int:
        """How many ``sent`` marks the database refused so far."""
        with self._database.connect() as db:
            last, called = db.execute(text("SELECT last_value, is_called FROM test_sent_mark_refusals")).one()
        return int(last) if called else 0

    def lift(self) -> None:
        """Let the database take ``sent`` marks again."""
        with self._database.begin() as db:
            db.execute(text("DROP TRIGGER IF EXISTS test_refuse_sent_mark ON email_deliveries"))


@contextmanager
def refusing_sent_marks(database: Any) -> Iterator[SentMarkRefusal]:
    """Refuse ``sent`` marks until lifted (at the latest when the block ends)."""
    refusal = SentMarkRefusal(database)
    with database.begin() as db:
        for statement in _CREATE:
            db.execute(text(statement))
    try:
        yield refusal
    finally:
        refusal.lift()
