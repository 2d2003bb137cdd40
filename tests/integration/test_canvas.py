"""Chains, groups and chords on a real worker and the PostgreSQL backend: no ``chord_unlock`` ever."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery import chain, chord, group
from celery.exceptions import ChordError
from celery.result import GroupResult
from kombu import Connection, Queue
from sqlalchemy import text

from app.celery_app import celery_app
from routing.topology import TASKS
from tests.support.canvas_tasks import INCLUDE, add, fail, on_error, tally
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess


@pytest.fixture(scope="module")
def worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker("booking", *INCLUDE)


@pytest.fixture
def spy(broker: Connection) -> Iterator[Callable[[], list[str]]]:
    """Every task message published to the tasks exchange from now on, by task name."""
    queue = Queue(f"spy-{uuid.uuid4().hex[:8]}", TASKS, routing_key="#", exclusive=True, auto_delete=True)
    channel = broker.channel()
    queue.bind(channel).declare()

    def published() -> list[str]:
        names = []
        while (message := channel.basic_get(queue.name, no_ack=True)) is not None:
            names.append(message.headers["task"])
        return names

    yield published
    channel.queue_delete(queue.name)  # bound to '#', it would make every later publish routable
    channel.close()


def runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_chord_runs_its_body_once_with_every_result_and_publishes_no_chord_unlock(
    worker: WorkerProcess, spy: Callable[[], list[str]], tmp_path: Path, database: Any
) -> None:
    # given a chord of ten additions whose body records each run
    body_runs = tmp_path / "body"

    # when it is applied
    result = chord(add.s(i, i) for i in range(10))(tally.s(str(body_runs)))

    # then the body gets every header result, in order, and runs once
    assert result.get(timeout=60) == [2 * i for i in range(10)]
    assert runs(body_runs) == 1
    # and the broker carried the header and the body, never a chord_unlock
    published = spy()
    assert "celery.chord_unlock" not in published
    assert sorted(set(published)) == ["tests.canvas.add", "tests.canvas.tally"]
    with database.connect() as db:
        done, size, fired = db.execute(
            text("SELECT done, size, fired_at IS NOT NULL FROM chord_counters")
        ).one()
    assert (done, size, fired) == (10, 10, True)


def test_header_tasks_finishing_together_fire_the_body_once(worker: WorkerProcess, tmp_path: Path) -> None:
    # given 40 header tasks that finish as fast as both worker processes can run them
    body_runs = tmp_path / "body"

    # when the chord runs
    result = chord(add.s(i, 1) for i in range(40))(tally.s(str(body_runs)))

    # then the body ran exactly once with all 40 results
    assert result.get(timeout=60) == [i + 1 for i in range(40)]
    assert runs(body_runs) == 1


def test_a_failed_header_task_fails_the_chord_and_its_errback_runs_once(
    worker: WorkerProcess, tmp_path: Path
) -> None:
    # given a chord whose third header task raises, and a body with an errback
    body_runs, errbacks = tmp_path / "body", tmp_path / "errbacks"
    header = [add.s(1, 1), add.s(2, 2), fail.s("boom"), add.s(3, 3)]
    body = tally.s(str(body_runs)).on_error(on_error.s(path=str(errbacks)))

    # when it runs
    result = chord(header)(body)

    # then the body never runs: its result is the chord's error naming the culprit
    body_result = celery_app.AsyncResult(
        result.id
    )  # without the header as parent, whose error get() would raise
    wait_until(body_result.ready, 60, "the chord body's result")
    assert body_result.status == "FAILURE"
    assert isinstance(body_result.result, ChordError)
    assert "ValueError('boom')" in str(body_result.result)
    assert runs(body_runs) == 0
    # and the body's errback ran once
    wait_until(lambda: runs(errbacks) >= 1, 30, "the errback")
    assert runs(errbacks) == 1


def test_nested_canvases_a_chain_inside_a_group_inside_a_chord(worker: WorkerProcess, tmp_path: Path) -> None:
    # given a chord whose header is two chains and a plain task
    body_runs = tmp_path / "body"
    header = group(chain(add.s(1, 1), add.s(10)), chain(add.s(2, 2), add.s(20), add.s(200)), add.s(5, 5))

    # when it runs
    result = chord(header)(tally.s(str(body_runs)))

    # then the body gets each chain's last result and the task's, once
    assert result.get(timeout=60) == [12, 224, 10]
    assert runs(body_runs) == 1


def test_a_chord_inside_a_chain_passes_its_body_result_on(worker: WorkerProcess, tmp_path: Path) -> None:
    # given validate -> (fan out, join) -> notify, as the seed's chain of steps
    body_runs = tmp_path / "body"
    workflow = chain(
        add.s(1, 1), chord([add.s(1), add.s(2)], tally.s(str(body_runs))), tally.s(str(body_runs))
    )

    # when it runs, then each step gets the previous one's result
    assert workflow.apply_async().get(timeout=60) == [3, 4]
    assert runs(body_runs) == 2


def test_group_results_save_restore_join_and_forget(worker: WorkerProcess) -> None:
    # given a group of five additions, saved
    result = group(add.s(i, 0) for i in range(5)).apply_async()
    result.save()

    # when it is restored elsewhere and joined (one query per round for all members)
    restored = GroupResult.restore(result.id, app=celery_app)
    assert restored is not None
    assert restored.get(timeout=60) == [0, 1, 2, 3, 4]
    assert restored.supports_native_join

    # then forgetting it removes its members' results, and deleting it removes the saved group
    restored.forget()
    assert [celery_app.AsyncResult(r.id).status for r in result.results] == ["PENDING"] * 5
    restored.delete()
    assert GroupResult.restore(result.id, app=celery_app) is None


def test_an_empty_header_runs_the_body_with_no_results(worker: WorkerProcess, tmp_path: Path) -> None:
    body_runs = tmp_path / "body"
    assert chord([])(tally.s(str(body_runs))).get(timeout=60) == []
    assert runs(body_runs) == 1


# -- the counter's rules, against PostgreSQL -----------------------------------


def header_request(group_id: str, task_id: str, body: Any, size: int) -> Any:
    """What the worker passes ``on_chord_part_return`` for one finished header task."""
    chord_options = dict(body)
    chord_options["chord_size"] = size
    return SimpleNamespace(group=group_id, chord=chord_options, id=task_id)


def test_a_redelivered_header_task_is_counted_once(broker: Connection, database: Any, tmp_path: Path) -> None:
    # given a two-task chord whose first header task has stored its result
    backend = celery_app.backend
    group_id, first, second = (str(uuid.uuid4()) for _ in range(3))
    body = tally.s(str(tmp_path / "body"))
    body.freeze()
    backend.apply_chord((group_id, [celery_app.AsyncResult(first), celery_app.AsyncResult(second)]), body)
    backend.store_result(first, 1, "SUCCESS")

    # when the first task returns twice (its message was redelivered after the first count)
    for _ in range(2):
        backend.on_chord_part_return(header_request(group_id, first, body, 2), "SUCCESS", 1)

    # then it counted once: the chord waits for the second task, and no body was published
    with database.connect() as db:
        assert db.execute(text("SELECT done, fired_at FROM chord_counters")).one() == (1, None)
    assert celery_app.AsyncResult(body.id).status == "PENDING"


def test_chord_rows_expire_with_the_results(database: Any) -> None:
    # given a chord created long ago
    backend = celery_app.backend
    group_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    backend.apply_chord((group_id, [celery_app.AsyncResult(task_id)]), add.s(0, 0))
    with database.begin() as db:
        db.execute(text("UPDATE chord_counters SET date_done = now() - interval '400 days'"))
        db.execute(text("UPDATE group_results SET date_done = now() - interval '400 days'"))

    # when results are cleaned up
    backend.cleanup()

    # then the chord's rows are gone with its group
    with database.connect() as db:
        assert db.execute(text("SELECT count(*) FROM chord_counters")).scalar_one() == 0
        assert db.execute(text("SELECT count(*) FROM group_results")).scalar_one() == 0
