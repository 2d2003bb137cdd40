"""The PostgreSQL result backend against a real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from celery import signals, states
from celery.app.task import Context
from celery.result import AsyncResult, GroupResult
from sqlalchemy import text

from app import result_backend
from app.celery_app import celery_app
from app.contracts import PROCESS_PAYMENT, SEND_PASSWORD_RESET, SEND_WELCOME_EMAIL
from app.db import engine_for
from app.mail.ledger import Claim, SqlDeliveryLedger
from app.settings import get_settings
from app.tasks.email_tasks import PASSWORD_RESET_RESULT_EXPIRES, send_welcome_email
from tests.integration.sent_mark_refusal import refusing_sent_marks


@pytest.fixture
def backend(database: Any) -> result_backend.PostgresBackend:
    backend = celery_app.backend
    assert isinstance(backend, result_backend.PostgresBackend)
    return backend


def _row(database: Any, task_id: str) -> Any:
    with database.connect() as db:
        return db.execute(
            text("SELECT status, result, date_done FROM task_results WHERE task_id = :id"), {"id": task_id}
        ).one_or_none()


def test_unknown_task_is_pending(backend: result_backend.PostgresBackend) -> None:
    result = AsyncResult(str(uuid.uuid4()), app=celery_app)
    assert result.status == states.PENDING
    assert result.result is None


def test_success_round_trips_json_types(backend: result_backend.PostgresBackend, database: Any) -> None:
    task_id = str(uuid.uuid4())
    value = {"when": datetime(2026, 1, 2, 3, 4, tzinfo=UTC), "amount": Decimal("12.50"), "n": [1, 2]}
    backend.store_result(task_id, value, states.SUCCESS)
    result = AsyncResult(task_id, app=celery_app)
    assert result.status == states.SUCCESS
    assert result.get(timeout=5) == value
    status, stored, date_done = _row(database, task_id)
    assert status == states.SUCCESS
    assert stored["n"] == [1, 2]  # plain JSON in the row, readable with SQL
    assert date_done is not None


def test_failure_round_trips_the_exception(backend: result_backend.PostgresBackend) -> None:
    task_id = str(uuid.uuid4())
    backend.store_result(task_id, ValueError("bad payment 7"), states.FAILURE, traceback="Traceback ...")
    result = AsyncResult(task_id, app=celery_app)
    assert result.status == states.FAILURE
    assert isinstance(result.result, ValueError)
    assert "bad payment 7" in str(result.result)
    assert result.traceback == "Traceback ..."


def test_a_late_duplicate_never_overwrites_success(backend: result_backend.PostgresBackend) -> None:
    task_id = str(uuid.uuid4())
    backend.store_result(task_id, "first", states.SUCCESS)
    backend.store_result(task_id, None, states.STARTED)
    backend.store_result(task_id, RuntimeError("late"), states.FAILURE)
    backend.store_result(task_id, "second", states.SUCCESS)
    meta = backend.get_task_meta(task_id, cache=False)
    assert (meta["status"], meta["result"]) == (states.SUCCESS, "first")


def test_a_started_write_never_hides_a_failure_but_a_replay_success_does(
    backend: result_backend.PostgresBackend,
) -> None:
    task_id = str(uuid.uuid4())
    backend.store_result(task_id, None, states.STARTED)
    backend.store_result(task_id, KeyError("x"), states.FAILURE)
    backend.store_result(task_id, None, states.STARTED)
    assert backend.get_task_meta(task_id, cache=False)["status"] == states.FAILURE
    backend.store_result(task_id, "ok", states.SUCCESS)
    assert backend.get_task_meta(task_id, cache=False)["result"] == "ok"


def test_group_save_restore_and_delete(backend: result_backend.PostgresBackend) -> None:
    children = [AsyncResult(str(uuid.uuid4()), app=celery_app) for _ in range(3)]
    for child in children:
        backend.store_result(child.id, 1, states.SUCCESS)
    group = GroupResult(str(uuid.uuid4()), children, app=celery_app)
    group.save(backend=backend)
    restored = GroupResult.restore(group.id, app=celery_app, backend=backend)
    assert restored is not None
    assert [r.id for r in restored.results] == [c.id for c in children]
    assert restored.get(timeout=5) == [1, 1, 1]
    restored.delete(backend=backend)
    assert GroupResult.restore(group.id, app=celery_app, backend=backend) is None


def test_forget_removes_the_row(backend: result_backend.PostgresBackend, database: Any) -> None:
    task_id = str(uuid.uuid4())
    backend.store_result(task_id, 1, states.SUCCESS)
    AsyncResult(task_id, app=celery_app).forget()
    assert _row(database, task_id) is None


def test_cleanup_deletes_only_expired_rows_in_batches(
    backend: result_backend.PostgresBackend, database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given 25 expired results and 5 fresh ones
    ids = [str(uuid.uuid4()) for _ in range(30)]
    for task_id in ids:
        backend.store_result(task_id, 1, states.SUCCESS)
    old = datetime.now(UTC) - timedelta(seconds=backend.expires + 60)
    with database.begin() as db:
        db.execute(
            text("UPDATE task_results SET date_done = :old WHERE task_id = ANY(:ids)"),
            {"old": old, "ids": ids[:25]},
        )
    monkeypatch.setattr(result_backend.expiry, "CLEANUP_BATCH", 10)
    # when cleanup runs
    deleted = backend.cleanup()
    # then exactly the expired rows are gone
    assert deleted == 25
    with database.connect() as db:
        left = db.execute(text("SELECT task_id FROM task_results")).scalars().all()
    assert sorted(left) == sorted(ids[25:])


def _stored(backend: result_backend.PostgresBackend, database: Any, task_name: str | None, age: float) -> str:
    """Store a SUCCESS of ``task_name`` (None: a row without a name) and back-date it ``age`` seconds."""
    task_id = str(uuid.uuid4())
    request = None if task_name is None else Context(task=task_name)
    backend.store_result(task_id, "done", states.SUCCESS, request=request)
    with database.begin() as db:
        db.execute(
            text(
                "UPDATE task_results SET date_done = now() - make_interval(secs => :age) WHERE task_id = :id"
            ),
            {"age": age, "id": task_id},
        )
    return task_id


def _kept(database: Any) -> set[str]:
    with database.connect() as db:
        return set(db.execute(text("SELECT task_id FROM task_results")).scalars())


def test_cleanup_deletes_a_task_s_rows_after_its_own_shorter_expiry(
    backend: result_backend.PostgresBackend, database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given password resets kept an hour (their task's own result_expires) and a global rule of days
    own = backend.task_expiries()[SEND_PASSWORD_RESET]
    assert own == PASSWORD_RESET_RESULT_EXPIRES < backend.expires
    # and three resets older than that hour, one younger, and rows of other tasks and of no
    # task younger and older than the global rule
    resets_old = [_stored(backend, database, SEND_PASSWORD_RESET, own + 60) for _ in range(3)]
    reset_fresh = _stored(backend, database, SEND_PASSWORD_RESET, own - 60)
    welcome_fresh = _stored(backend, database, SEND_WELCOME_EMAIL, own + 60)
    welcome_old = _stored(backend, database, SEND_WELCOME_EMAIL, backend.expires + 60)
    nameless_old = _stored(backend, database, None, backend.expires + 60)
    monkeypatch.setattr(result_backend.expiry, "CLEANUP_BATCH", 2)

    # when cleanup runs
    deleted = backend.cleanup()

    # then the old resets are gone (in batches) while the welcome email as old stays;
    # the other rows keep the global rule
    assert deleted == 5
    assert _kept(database) == {reset_fresh, welcome_fresh}
    assert not {*resets_old, welcome_old, nameless_old} & _kept(database)


def test_cleanup_keeps_a_task_s_rows_for_its_own_longer_expiry(
    backend: result_backend.PostgresBackend, database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given welcome emails whose task keeps its results a day longer than the global rule
    longer = int(backend.expires) + 86400
    monkeypatch.setattr(celery_app.tasks[SEND_WELCOME_EMAIL], "result_expires", longer)
    # and welcome rows past the global rule but not past their own, and past their own;
    # a payment row past the global rule
    welcome_kept = _stored(backend, database, SEND_WELCOME_EMAIL, backend.expires + 60)
    welcome_old = _stored(backend, database, SEND_WELCOME_EMAIL, longer + 60)
    payment_old = _stored(backend, database, PROCESS_PAYMENT, backend.expires + 60)

    # when cleanup runs
    deleted = backend.cleanup()

    # then the welcome row the global rule would delete stays; the others are gone
    assert deleted == 2
    assert _kept(database) == {welcome_kept}
    assert not {welcome_old, payment_old} & _kept(database)


def test_stores_reuse_pooled_connections(backend: result_backend.PostgresBackend, database: Any) -> None:
    def sessions() -> int:
        with database.connect() as db:
            return int(
                db.execute(
                    text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
                ).scalar_one()
            )

    backend.store_result(str(uuid.uuid4()), 0, states.SUCCESS)  # warm the pool
    before = sessions()
    for i in range(50):
        backend.store_result(str(uuid.uuid4()), i, states.SUCCESS)
    # the stock DatabaseBackend opens one session per result here; the pool opens none
    assert sessions() - before <= 2


def test_asynchronous_commit_is_a_per_session_choice(database: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(celery_app.conf, "result_backend_transport_options", {"synchronous_commit": False})
    fast = result_backend.PostgresBackend(app=celery_app, url=str(database.url.render_as_string(False)))
    task_id = str(uuid.uuid4())
    fast.store_result(task_id, "quick", states.SUCCESS)
    assert fast.get_task_meta(task_id)["result"] == "quick"
    assert fast._execute("SHOW synchronous_commit", (), fetch=True) == ("off",)
    # the domain engine keeps durable commits
    with database.connect() as db:
        assert db.execute(text("SHOW synchronous_commit")).scalar() == "on"


def _riding_ledger(backend: result_backend.PostgresBackend) -> SqlDeliveryLedger:
    """The mail ledger with its sent marks riding on ``backend``'s result rows."""

    def commit_with(task_id: str, sql: str, params: dict[str, Any], rerun_headers: dict[str, str]) -> bool:
        backend.commit_with_result(task_id, sql, params, rerun_headers)
        return True

    engine = engine_for(get_settings().database_url, autocommit=True)
    return SqlDeliveryLedger(engine, lease_seconds=60, commit_with=commit_with)


def _sent_riding_on_a_result(backend: result_backend.PostgresBackend) -> tuple[str, str]:
    """A new task's email, claimed and marked sent, the mark riding on its result: (task id, key)."""
    task_id = str(uuid.uuid4())
    ledger = _riding_ledger(backend)
    assert ledger.claim(f"ride-{task_id}", "welcome", "<m@x>", task_id) == Claim("send")
    ledger.record_sent(f"ride-{task_id}", task_id)
    return task_id, f"ride-{task_id}"


def _delivery(database: Any, key: str) -> tuple[str, int]:
    """(status, xmin: the id of the transaction that last wrote it) of a ledger row."""
    with database.connect() as db:
        row = db.execute(
            text("SELECT status, xmin::text::bigint FROM email_deliveries WHERE idempotency_key = :k"),
            {"k": key},
        ).one()
    return row[0], row[1]


def _result_xmin(database: Any, task_id: str) -> int:
    with database.connect() as db:
        return int(
            db.execute(
                text("SELECT xmin::text::bigint FROM task_results WHERE task_id = :id"), {"id": task_id}
            ).scalar_one()
        )


def test_a_sent_mark_commits_in_the_transaction_of_the_result_row(
    backend: result_backend.PostgresBackend, database: Any
) -> None:
    # given an email claimed by a task, then marked sent, riding on the task's result
    task_id, key = _sent_riding_on_a_result(backend)
    # then nothing is written before the task's state is stored
    assert _delivery(database, key)[0] == "sending"
    # when the state is stored
    backend.store_result(task_id, "sent", states.SUCCESS)
    # then both rows were written by one transaction
    status, xmin = _delivery(database, key)
    assert status == "sent"
    assert xmin == _result_xmin(database, task_id)


def test_a_failed_store_commits_neither_and_the_mark_rides_on_the_next_one(
    backend: result_backend.PostgresBackend, database: Any
) -> None:
    # given a sent mark riding on a task's result
    task_id, key = _sent_riding_on_a_result(backend)
    # when storing the state fails in the database (a state too long for its column)
    with pytest.raises(Exception, match="too long"):
        backend.store_result(task_id, None, "X" * 60)
    # then the mark was rolled back with it
    assert _delivery(database, key)[0] == "sending"
    assert _row(database, task_id) is None
    # and the next stored state carries it
    backend.store_result(task_id, "sent", states.SUCCESS)
    assert _delivery(database, key)[0] == "sent"


def test_a_mark_no_stored_state_took_is_committed_at_the_end_of_the_task(
    backend: result_backend.PostgresBackend, database: Any
) -> None:
    # given a sent mark riding on a task whose state was never stored
    task_id, key = _sent_riding_on_a_result(backend)
    # when the task's trace ends (task_postrun comes before the ack)
    task = send_welcome_email
    signals.task_postrun.send(sender=task, task_id=task_id, task=task, args=(), kwargs={}, state="SUCCESS")
    # then the mark is committed on its own, and nothing waits any more
    assert _delivery(database, key)[0] == "sent"
    assert _row(database, task_id) is None
    backend.store_result(task_id, "later", states.SUCCESS)  # carries nothing
    assert _delivery(database, key)[0] == "sent"


def test_a_refused_mark_lets_the_state_be_stored_and_waits_for_the_end_of_the_task(
    backend: result_backend.PostgresBackend, database: Any
) -> None:
    # given a sent mark riding on a task's result, and a database refusing it
    task_id, key = _sent_riding_on_a_result(backend)
    with refusing_sent_marks(database) as refusal:
        # when the task's state is stored
        backend.store_result(task_id, "sent", states.SUCCESS)
        # then the state is stored alone, the mark is not committed...
        assert _row(database, task_id)[0] == states.SUCCESS
        assert _delivery(database, key)[0] == "sending"
        assert refusal.refusals() == 1
        # ...and it still waits for the end of the task
        refusal.lift()
    task = send_welcome_email
    signals.task_postrun.send(sender=task, task_id=task_id, task=task, args=(), kwargs={}, state="SUCCESS")
    assert _delivery(database, key)[0] == "sent"
