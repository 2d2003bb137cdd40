"""Result waits wake on PostgreSQL NOTIFY, and fall back to polling where it cannot reach them."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import pytest
from celery.result import AsyncResult, GroupResult
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app import result_backend
from app.celery_app import celery_app
from app.migrate import upgrade

#: Far longer than any wait below: a wait that returns was woken by NOTIFY, not by its poll.
NO_POLL = 3600.0


@pytest.fixture
def backend(database: Any) -> result_backend.PostgresBackend:
    backend = celery_app.backend
    assert isinstance(backend, result_backend.PostgresBackend)
    return backend


def store_later(
    backend: result_backend.PostgresBackend, task_id: str, value: Any, delay: float = 0.3
) -> None:
    """Store ``task_id``'s result from another thread after ``delay`` seconds, as a worker would."""
    timer = threading.Timer(delay, backend.store_result, (task_id, value, "SUCCESS"))
    timer.start()


def test_a_wait_wakes_on_the_stored_result_not_on_a_poll(
    backend: result_backend.PostgresBackend, database: Any
) -> None:
    # given a result that a worker stores 0.3 s from now
    task_id = str(uuid.uuid4())
    store_later(backend, task_id, {"ok": 1})

    # when a producer waits for it, polling only once an hour
    listener = backend.listener()
    assert listener is not None
    woken = listener.wakeups
    value = AsyncResult(task_id, app=celery_app).get(timeout=60, interval=NO_POLL)

    # then the NOTIFY sent with the stored row woke it, and its registration is gone
    assert value == {"ok": 1}
    assert listener.wakeups == woken + 1
    with database.connect() as db:
        assert db.execute(text("SELECT count(*) FROM result_waiters")).scalar_one() == 0


def test_a_group_wait_wakes_on_each_member(backend: result_backend.PostgresBackend) -> None:
    # given a saved group of three whose members are stored one after another
    ids = [str(uuid.uuid4()) for _ in range(3)]
    group = GroupResult(str(uuid.uuid4()), [AsyncResult(i, app=celery_app) for i in ids], app=celery_app)
    for index, task_id in enumerate(ids):
        store_later(backend, task_id, index, delay=0.2 * (index + 1))

    # when the producer joins it, polling only once an hour
    listener = backend.listener()
    assert listener is not None
    woken = listener.wakeups

    # then it has every member, woken by their announcements (two may arrive in one wake)
    assert group.get(timeout=60, interval=NO_POLL) == [0, 1, 2]
    assert listener.wakeups > woken


def test_results_nobody_waits_for_announce_nothing(backend: result_backend.PostgresBackend) -> None:
    # given this thread's listener, registered for nothing
    listener = backend.listener()
    assert listener is not None

    # when a result is stored, then no announcement arrives
    backend.store_result(str(uuid.uuid4()), 1, "SUCCESS")
    assert listener.wait({"anything"}, 0.5) is False
    assert listener.connection.notifies == []


def test_where_notify_cannot_reach_the_waiter_it_polls_and_says_so(
    database: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # given a backend whose announcements go to another database than its listener hears
    # (what a pooler in transaction mode does to LISTEN: the notification never reaches it)
    url = make_url(str(database.url))
    other = url.set(database=f"{url.database}_waits")  # created once, migrated, kept for the next run
    upgrade(other.render_as_string(hide_password=False))
    backend = result_backend.PostgresBackend(app=celery_app, url=other.render_as_string(hide_password=False))
    listener = result_backend.Listener(str(url.render_as_string(hide_password=False)))
    try:
        # when it probes, then it gives up on NOTIFY with a warning naming the cause
        with caplog.at_level(logging.WARNING, logger="app.result_backend"):
            assert backend._probe(listener) is False
        assert "does not reach this process" in caplog.text
    finally:
        listener.close()

    # and a wait still returns, by polling
    backend.notify_works = False
    task_id = str(uuid.uuid4())
    store_later(backend, task_id, "polled", delay=0.2)
    assert backend.wait_for(task_id, timeout=30, interval=0.1)["result"] == "polled"


#: Task ids whose store the trigger below holds inside its statement.
HELD = "held-store-"


@pytest.fixture
def slow_store(database: Any) -> Any:
    """A trigger that keeps the storing statement of a ``HELD`` task id running for 1.5 s."""
    with database.begin() as db:
        db.execute(
            text(
                "CREATE OR REPLACE FUNCTION test_hold_store() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_sleep(1.5); RETURN NEW; END $$"
            )
        )
        db.execute(text("DROP TRIGGER IF EXISTS test_hold_store ON task_results"))
        db.execute(
            text(
                "CREATE TRIGGER test_hold_store BEFORE INSERT ON task_results FOR EACH ROW "
                f"WHEN (NEW.task_id LIKE '{HELD}%') EXECUTE FUNCTION test_hold_store()"
            )
        )
    yield
    with database.begin() as db:
        db.execute(text("DROP TRIGGER IF EXISTS test_hold_store ON task_results"))
        db.execute(text("DROP FUNCTION IF EXISTS test_hold_store()"))


def test_a_wait_that_registers_while_its_result_is_being_stored_still_wakes(
    backend: result_backend.PostgresBackend, database: Any, slow_store: Any
) -> None:
    # given a result whose storing statement has begun (its snapshot taken) and not committed
    task_id = f"{HELD}{uuid.uuid4()}"
    store = threading.Thread(target=backend.store_result, args=(task_id, "stored", "SUCCESS"))
    store.start()
    with database.connect() as db:
        while not db.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE :q"),
            {"q": "%magnetiq_store_result%"},
        ).scalar_one():
            assert store.is_alive(), "the store ended before the wait began"
            db.commit()

    # when a producer starts waiting now, with no timeout, polling only once an hour
    # (its registration would commit before that store does, unseen by its snapshot)
    got: list[Any] = []
    waiter = threading.Thread(
        target=lambda: got.append(AsyncResult(task_id, app=celery_app).get(interval=NO_POLL)), daemon=True
    )
    waiter.start()

    # then it gets the result: the store saw the registration, or the wait saw the store
    waiter.join(60)
    store.join()
    assert got == ["stored"], "the wait was neither announced nor saw the stored result"


def test_a_large_wait_registers_every_member_and_ends_clean(
    backend: result_backend.PostgresBackend, database: Any
) -> None:
    # given a wait for more tasks than one registration transaction holds locks for
    ids = [str(uuid.uuid4()) for _ in range(result_backend.REGISTER_BATCH * 2 + 7)]

    # when it registers and ends, then every member was registered once and none is left
    backend.register_waiter(ids, "large-wait")
    with database.connect() as db:
        count = text("SELECT count(*) FROM result_waiters WHERE waiter = 'large-wait'")
        assert db.execute(count).scalar_one() == len(ids)
        backend.unregister_waiter(ids, "large-wait")
        db.commit()
        assert db.execute(count).scalar_one() == 0
