"""``contracts.ARGUMENT_MODELS``: one model per task, the very model the task validates with."""

from __future__ import annotations

import pytest

import app.tasks.booking_tasks
import app.tasks.email_tasks
import app.tasks.maintenance
from app import contracts
from app.celery_app import celery_app


def test_every_task_name_has_a_model() -> None:
    assert sorted(contracts.ARGUMENT_MODELS) == sorted(contracts.TASK_NAMES)


def test_each_model_is_the_one_the_registered_task_validates_with() -> None:
    # given every task module loaded, as a worker loads them
    assert app.tasks.booking_tasks and app.tasks.email_tasks and app.tasks.maintenance
    tasks = {name: celery_app.tasks[name] for name in contracts.TASK_NAMES}

    # when each task's own model is read
    own = {name: getattr(task, "arguments", None) for name, task in tasks.items()}

    # then the publish paths validate with exactly that model
    assert own == contracts.ARGUMENT_MODELS


def test_a_chain_step_takes_its_parents_result_and_refuses_anything_else() -> None:
    # given the import's last step, meant to follow finish_booking_import in a chain
    notify = celery_app.tasks[contracts.NOTIFY_BOOKING_IMPORT]
    report = {"import_id": 7, "status": "completed", "imported": 3, "rejected": 5}

    # when a chain hands it its parent's result (its first argument, ``report``)
    model = contracts.validate_arguments(
        contracts.NOTIFY_BOOKING_IMPORT, notify.arguments, {"report": report}
    )

    # then it is taken as the report it is
    assert model.report == contracts.ImportReport(**report)  # type: ignore[attr-defined]

    # and a parent that returns something else is refused by name, before a message exists
    with pytest.raises(contracts.InvalidTaskArguments, match="report"):
        notify.s().apply_async(("Import 7: 3 imported",))
    with pytest.raises(contracts.InvalidTaskArguments, match="imported"):
        notify.s().apply_async(({**report, "imported": -1},))


def test_a_chord_body_takes_its_headers_results() -> None:
    # given the calendar export's body, which takes the header's results
    finish = celery_app.tasks[contracts.FINISH_CALENDAR_EXPORT]

    # then the feeds written (None for a resource gone) are taken, and a wrong shape is refused
    assert contracts.FinishCalendarExportArgs(exported=[1, None, 3]).exported == [1, None, 3]
    with pytest.raises(contracts.InvalidTaskArguments, match="exported"):
        finish.s().apply_async((["resource-1.ics"],))
