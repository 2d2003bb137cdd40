"""``contracts.ARGUMENT_MODELS``: one model per task, the very model the task validates with."""

from __future__ import annotations

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
