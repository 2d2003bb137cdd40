"""Progress of long tasks: PROGRESS with done/total on the producer's result, as the import reports it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from app import producer
from app.booking.imports import create_import
from tests.integration.booking_helpers import IMPORT_CSV, rows, seed
from tests.support.worker_process import WorkerProcess

_LOG_STATE = """
CREATE FUNCTION test_log_state() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO test_state_log (task_id, status, result) VALUES (NEW.task_id, NEW.status, NEW.result);
    RETURN NEW;
END $$
"""


@pytest.fixture
def state_log(database: Any) -> Iterator[Callable[[str], list[tuple[str, Any]]]]:
    """Every state stored for a task id in ``task_results``, in order (a trigger the test adds and drops)."""
    with database.begin() as db:
        db.execute(text("CREATE TABLE test_state_log (task_id text, status text, result jsonb, n bigserial)"))
        db.execute(text(_LOG_STATE))
        db.execute(
            text(
                "CREATE TRIGGER test_log_state AFTER INSERT OR UPDATE ON task_results "
                "FOR EACH ROW EXECUTE FUNCTION test_log_state()"
            )
        )
    try:
        yield lambda task_id: [
            (row.status, row.result)
            for row in rows(
                database,
                "SELECT status, result FROM test_state_log WHERE task_id = :id ORDER BY n",
                id=task_id,
            )
        ]
    finally:
        with database.begin() as db:
            db.execute(text("DROP TRIGGER test_log_state ON task_results"))
            db.execute(text("DROP FUNCTION test_log_state()"))
            db.execute(text("DROP TABLE test_state_log"))


def test_an_import_shows_its_progress_on_the_producer_s_result(
    start_worker: Callable[..., WorkerProcess],
    database: Any,
    state_log: Callable[[str], list[tuple[str, Any]]],
) -> None:
    # given a booking worker that books imports in chunks of two rows, and a CSV of two chunks
    start_worker("booking", BOOKING_IMPORT_CHUNK_SIZE="2")
    seed(database, slots=3)
    import_id = create_import(database, "staff.csv", IMPORT_CSV)

    # when the producer imports it and waits for the result
    result = producer.enqueue_import_bookings(import_id)
    assert result.get(timeout=60).startswith(f"Import {import_id} completed")

    # then the producer's result went through PROGRESS with the chunks booked out of two, then SUCCESS
    stored = state_log(result.id)
    progress = [value for status, value in stored if status == "PROGRESS"]
    assert progress, stored
    assert all(value["total"] == 2 and 1 <= value["done"] <= 2 for value in progress), progress
    assert progress[-1] == {"done": 2, "total": 2}
    assert stored[-1][0] == "SUCCESS"
