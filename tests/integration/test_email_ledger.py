"""The delivery ledger in PostgreSQL: one claim wins, sent is final, a stale lease is taken over."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import text

from app.db import engine_for
from app.mail.ledger import Claim, SqlDeliveryLedger
from app.settings import get_settings


def ledger(lease: float = 60) -> SqlDeliveryLedger:
    return SqlDeliveryLedger(engine_for(get_settings().database_url, autocommit=True), lease_seconds=lease)


def row(database: Any, key: str) -> dict[str, Any]:
    with database.connect() as db:
        found = db.execute(
            text(
                "SELECT status, attempts, last_error, message_id, task_id, "
                "sent_at IS NOT NULL AS has_sent_at FROM email_deliveries WHERE idempotency_key = :k"
            ),
            {"k": key},
        ).one()
    return dict(found._mapping)


def _past_its_lease(database: Any, key: str) -> None:
    with database.begin() as db:
        db.execute(
            text(
                "UPDATE email_deliveries SET updated_at = now() - interval '2 minutes' "
                "WHERE idempotency_key = :k"
            ),
            {"k": key},
        )


def test_of_many_concurrent_claims_exactly_one_sends(database: Any) -> None:
    # when 20 threads claim one key at once
    with ThreadPoolExecutor(max_workers=20) as pool:
        claims = list(pool.map(lambda i: ledger().claim("k-race", "welcome", "<m@x>", f"t{i}"), range(20)))

    # then one may send and the others see it busy
    assert claims.count(Claim("send")) == 1
    assert [c.state for c in claims].count("busy") == 19
    assert row(database, "k-race")["status"] == "sending"


def test_sent_is_final(database: Any) -> None:
    book = ledger()
    assert book.claim("k-sent", "welcome", "<m@x>", "t1") == Claim("send")
    book.record_sent("k-sent")

    assert book.claim("k-sent", "welcome", "<m@x>", "t2") == Claim("sent")
    stored = row(database, "k-sent")
    assert (stored["status"], stored["attempts"], stored["task_id"], stored["has_sent_at"]) == (
        "sent",
        1,
        "t1",
        True,
    )


def test_transient_failure_frees_the_key_and_permanent_refuses_it(database: Any) -> None:
    book = ledger()
    book.claim("k-fail", "welcome", "<m@x>", "t1")
    book.record_failure("k-fail", "SMTP 451: later", permanent=False)
    assert row(database, "k-fail")["status"] == "pending"

    assert book.claim("k-fail", "welcome", "<m@x>", "t1") == Claim("send")
    book.record_failure("k-fail", "SMTP 550: no such user", permanent=True)

    assert book.claim("k-fail", "welcome", "<m@x>", "t1") == Claim("refused", "SMTP 550: no such user")
    stored = row(database, "k-fail")
    assert (stored["status"], stored["attempts"], stored["last_error"]) == (
        "failed",
        2,
        "SMTP 550: no such user",
    )


def test_a_sending_row_past_its_lease_is_taken_over(database: Any) -> None:
    # given an attempt that claimed a key and died (its row stays `sending`)
    ledger().claim("k-lease", "welcome", "<m@x>", "t1")
    _past_its_lease(database, "k-lease")

    # when a redelivery claims it: within the lease it is busy (told when the
    # lease ends), past it it may send
    busy = ledger(lease=300).claim("k-lease", "welcome", "<m@x>", "t1")
    assert busy.state == "busy"
    assert busy.retry_in is not None
    assert 170 <= busy.retry_in <= 180
    assert ledger(lease=60).claim("k-lease", "welcome", "<m@x>", "t1") == Claim("send")
    assert row(database, "k-lease")["attempts"] == 2


def _owing(*owed: tuple[str, str]) -> SqlDeliveryLedger:
    """A ledger whose running task is a rerun owing the marks ``owed`` ((key, task id) pairs)."""
    engine = engine_for(get_settings().database_url, autocommit=True)
    return SqlDeliveryLedger(engine, lease_seconds=60, accepted=lambda key, task_id: (key, task_id) in owed)


def test_a_rerun_owing_the_mark_commits_it_instead_of_sending_even_past_the_lease(database: Any) -> None:
    # given task t1 sent k-owed, its mark was refused, and the lease is over
    ledger().claim("k-owed", "welcome", "<m@x>", "t1")
    _past_its_lease(database, "k-owed")

    # when t1's rerun claims it: the mark is committed, nothing is to be sent
    assert _owing(("k-owed", "t1")).claim("k-owed", "welcome", "<m@x>", "t1") == Claim("sent")
    stored = row(database, "k-owed")
    assert (stored["status"], stored["task_id"], stored["attempts"], stored["has_sent_at"]) == (
        "sent",
        "t1",
        1,
        True,
    )


def test_a_mark_owed_by_another_task_is_not_taken(database: Any) -> None:
    # given task t1 holds k-other (past its lease)
    ledger().claim("k-other", "welcome", "<m@x>", "t1")
    _past_its_lease(database, "k-other")

    # when task t2 says it owes the key's mark, it is not believed: the key is t1's
    assert _owing(("k-other", "t2")).claim("k-other", "welcome", "<m@x>", "t2") == Claim("send")
    assert row(database, "k-other")["status"] == "sending"
