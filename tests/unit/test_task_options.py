"""Per-task options: the shipped ``rate_limit`` and ``result_expires``, and bad values refused by name."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from celery.utils.time import rate

from app import contracts
from app.celery_app import celery_app
from app.tasks.base import FleetTask, TaskOptionError
from app.tasks.booking_tasks import EXPORT_RATE_LIMIT, booking_task
from app.tasks.email_tasks import PASSWORD_RESET_RESULT_EXPIRES, email_task

#: Values Celery's rate parser refuses, or that would make its token bucket run backwards.
BAD_RATES = ["10/x", "ten/m", "-1/m", ["10/m"]]
#: Values that are no whole number of seconds > 0.
BAD_EXPIRIES = [0, -60, 1.5, "3600", True]


def test_the_export_is_rate_limited_and_the_password_reset_result_expires_early() -> None:
    # given the registered tasks
    tasks = celery_app.tasks

    # then the export carries the shipped limit, which Celery reads as 10 a minute
    export = tasks[contracts.EXPORT_BOOKING_CALENDARS]
    assert export.rate_limit == EXPORT_RATE_LIMIT
    assert rate(export.rate_limit) == pytest.approx(10 / 60)
    # and the password reset keeps its result an hour; its messages never expire
    # (Celery's own ``expires`` is message expiry, and stays unset)
    reset = tasks[contracts.SEND_PASSWORD_RESET]
    assert reset.result_expires == PASSWORD_RESET_RESULT_EXPIRES == 3600
    assert reset.expires is None
    # and no other fleet task sets either option
    others = [
        t for name, t in tasks.items() if name in contracts.ARGUMENT_MODELS and t not in (export, reset)
    ]
    assert others
    assert all(t.rate_limit is None and t.result_expires is None for t in others)


@pytest.mark.parametrize("bad", BAD_RATES[:-1])
def test_a_booking_task_with_a_bad_rate_limit_fails_at_import(bad: str) -> None:
    # when a booking task is declared with a rate Celery cannot parse
    with pytest.raises(TaskOptionError) as raised:
        booking_task("app.tasks.booking_tasks.bad_export", contracts.NoArgs, rate_limit=bad)

    # then the error names the task, the option and the value
    assert str(raised.value).startswith(f"app.tasks.booking_tasks.bad_export: invalid rate_limit {bad!r}")


@pytest.mark.parametrize("bad", BAD_EXPIRIES)
def test_an_email_task_with_a_bad_result_expires_fails_at_import(bad: Any) -> None:
    # when an email task is declared with a result expiry that is no positive whole number
    with pytest.raises(TaskOptionError) as raised:
        email_task("app.tasks.email_tasks.bad_reset", contracts.NoArgs, result_expires=bad)

    # then the error names the task, the option and the value
    assert str(raised.value).startswith(f"app.tasks.email_tasks.bad_reset: invalid result_expires {bad!r}")


@pytest.mark.parametrize(
    ("option", "bad"),
    [*(("rate_limit", r) for r in BAD_RATES), *(("result_expires", e) for e in BAD_EXPIRIES)],
)
def test_any_fleet_task_with_a_bad_option_fails_at_registration(option: str, bad: Any) -> None:
    # given an app of the test's own (the fleet's stays as it is)
    app = Celery("options", set_as_current=False)

    def body() -> None:
        """A task body."""

    # when a task is registered on the fleet's base with a bad option, however it is declared
    with pytest.raises(TaskOptionError, match=rf"^tests\.bad: invalid {option} "):
        app.task(base=FleetTask, name="tests.bad", shared=False, lazy=False, **{option: bad})(body)

    # then it is not registered
    assert "tests.bad" not in app.tasks


@pytest.mark.parametrize(
    ("option", "good"),
    [
        *(("rate_limit", r) for r in (None, "10/m", "0.5/s", "2/h", 5)),
        *(("result_expires", e) for e in (None, 60)),
    ],
)
def test_the_forms_celery_documents_are_accepted(option: str, good: Any) -> None:
    # given an app of the test's own
    app = Celery("options", set_as_current=False)

    def body() -> None:
        """A task body."""

    # when a task is registered with a rate Celery documents, or a result expiry in seconds
    app.task(base=FleetTask, name="tests.good", shared=False, lazy=False, **{option: good})(body)

    # then it is registered with it
    assert getattr(app.tasks["tests.good"], option) == good


def test_progress_is_written_at_most_once_an_interval_and_always_when_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a task on an app with Celery's in-memory result backend, running as task "job-1"
    app = Celery("progress", backend="cache+memory://", set_as_current=False)

    @app.task(name="progress.job", bind=True, base=FleetTask, progress_interval=1.0)
    def job(self: FleetTask) -> None:
        """Never run: only its progress is reported."""

    task: Any = job
    task.push_request(id="job-1")
    clock = [100.0]
    monkeypatch.setattr("app.tasks.base.time.monotonic", lambda: clock[0])

    def report(done: int, at: float) -> Any:
        clock[0] = at
        return task.report_progress(done, 4), app.backend.get_task_meta("job-1")["result"]

    # when it reports four steps, the middle two within a second of the first
    try:
        first, second, third = report(1, 100.0), report(2, 100.5), report(3, 101.2)
        last = report(4, 101.3)
    finally:
        task.pop_request()

    # then the first and third were written, the second skipped, and the last written though early
    assert first == (True, {"done": 1, "total": 4})
    assert second == (False, {"done": 1, "total": 4})
    assert third == (True, {"done": 3, "total": 4})
    assert last == (True, {"done": 4, "total": 4})
    assert app.backend.get_task_meta("job-1")["status"] == contracts.PROGRESS
