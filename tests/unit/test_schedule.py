"""Unit tests of the schedule as data: cron slots, grace, loading, and the periodic task arguments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import app.tasks.maintenance  # noqa: F401 - registers the maintenance tasks
from app.celery_app import celery_app
from app.contracts import CLEANUP_OLD_SESSIONS, InvalidTaskArguments, PeriodicArgs, validate_arguments
from app.maintenance.dead_letters import message_time
from app.maintenance.schedule import SCHEDULE, Job, find_job, load_schedule
from app.tasks.base import FleetTask

DAILY = Job("daily", CLEANUP_OLD_SESSIONS, "15 3 * * *", expires_seconds=3600)
EVERY_2S = Job("fast", CLEANUP_OLD_SESSIONS, "* * * * * */2", expires_seconds=5)


def at(hour: int, minute: int, second: int = 0, micro: int = 0, day: int = 24) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, micro, tzinfo=UTC)


def test_a_slot_is_due_at_its_exact_time_and_until_its_grace_ends() -> None:
    # given a daily job at 03:15 with an hour of grace
    # when asked at, just before, during and after its grace
    # then only 03:15 <= now < 04:15 has the slot due
    assert DAILY.due_slots(at(3, 14, 59, 999999)) == []
    assert DAILY.due_slots(at(3, 15)) == [at(3, 15)]
    assert DAILY.due_slots(at(4, 14, 59)) == [at(3, 15)]
    assert DAILY.due_slots(at(4, 15)) == []


def test_the_next_slot_is_strictly_after_now() -> None:
    # given any moment of the day
    # when the next slot is computed
    # then it is the following cron time, never now itself
    assert DAILY.next_slot(at(3, 15)) == at(3, 15, day=25)
    assert DAILY.next_slot(at(1, 0)) == at(3, 15)


def test_a_seconds_field_gives_per_second_slots_oldest_first() -> None:
    # given a job every second second with five seconds of grace
    # when asked at 00:00:07.5
    # then the even seconds after 00:00:02.5 are due, oldest first
    assert EVERY_2S.due_slots(at(0, 0, 7, 500000)) == [at(0, 0, 4), at(0, 0, 6)]
    assert EVERY_2S.next_slot(at(0, 0, 7, 500000)) == at(0, 0, 8)


def test_bad_jobs_are_refused_when_defined() -> None:
    with pytest.raises(ValueError, match="invalid cron expression"):
        Job("bad", CLEANUP_OLD_SESSIONS, "every day")
    with pytest.raises(ValueError, match="expires_seconds must be positive"):
        Job("bad", CLEANUP_OLD_SESSIONS, "* * * * *", expires_seconds=0)


def test_the_schedule_loads_by_name_and_finds_its_jobs() -> None:
    assert load_schedule() == SCHEDULE
    assert find_job(SCHEDULE, "expire-results").task == "app.tasks.maintenance.expire_results"
    with pytest.raises(KeyError, match="no job 'nope'; known: cleanup-old-sessions"):
        find_job(SCHEDULE, "nope")


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("app.maintenance.schedule", "must look like"),
        ("app.maintenance.nowhere:SCHEDULE", "cannot be loaded"),
        ("app.maintenance.schedule:NOTHING", "cannot be loaded"),
        ("app.maintenance.schedule:DEFAULT_SCHEDULE", "not a sequence of Job"),
    ],
)
def test_a_bad_schedule_name_is_one_clear_error(spec: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        load_schedule(spec)


def test_periodic_arguments_are_a_job_and_an_aware_slot_or_nothing() -> None:
    # given beat's arguments, a call by hand, and bad mixes
    beat = validate_arguments(
        CLEANUP_OLD_SESSIONS, PeriodicArgs, {"job": "j", "slot": "2026-11-24T03:15:00+00:00"}
    )
    plain = validate_arguments(CLEANUP_OLD_SESSIONS, PeriodicArgs, {})

    # then beat's are recorded under (job, slot), a plain call under nothing
    assert isinstance(beat, PeriodicArgs) and isinstance(plain, PeriodicArgs)
    assert beat.recorded == ("j", at(3, 15))
    assert plain.recorded is None
    for bad in (
        {"job": "j"},
        {"slot": "2026-11-24T03:15:00+00:00"},
        {"job": "j", "slot": "2026-11-24T03:15:00"},
    ):
        with pytest.raises(InvalidTaskArguments):
            validate_arguments(CLEANUP_OLD_SESSIONS, PeriodicArgs, bad)


def test_a_dead_letter_is_aged_from_its_first_death_else_its_sent_at() -> None:
    first, later = at(1, 0), at(2, 0)
    deaths = {"x-death": [{"time": later, "queue": "email"}, {"time": first, "queue": "booking"}]}
    assert message_time(deaths) == first.timestamp()
    assert message_time({"sent_at": 1700000000.5}) == 1700000000.5
    assert (
        message_time({"x-death": [{"time": first - timedelta(hours=1)}], "sent_at": 1.0})
        == (first - timedelta(hours=1)).timestamp()
    )
    assert message_time(None) is None
    assert message_time({"sent_at": "yesterday"}) is None


def test_every_scheduled_task_takes_a_job_and_a_slot() -> None:
    # given the registered maintenance tasks
    # when each job's task is looked up
    # then it validates PeriodicArgs, so its runs are recorded per slot
    for job in SCHEDULE:
        task = celery_app.tasks[job.task]
        assert isinstance(task, FleetTask)
        assert task.arguments is PeriodicArgs, job.name
