"""Reading a dead-lettered message and building its replay, on py-amqp messages as the broker gives them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from amqp import Message

from app.maintenance.dead_letters import DeadLetter
from workers.cli.dead_letters import REPLAYS_HEADER, ReplayError, dlq_name, replay_message, replay_route

PAYMENT = "app.tasks.booking_tasks.process_payment"


def dead(task: str = PAYMENT, queue: str = "booking", **extra: Any) -> DeadLetter:
    headers = {
        "id": "t-1",
        "task": task,
        "sent_at": 1.5,
        "x-death": [
            {"queue": queue, "reason": "rejected", "count": 2, "time": datetime(2026, 1, 1, 12, 0, 0)},
            {"queue": "email", "reason": "expired", "count": 1, "time": datetime(2025, 1, 1)},
        ],
        "x-first-death-queue": "email",
        "x-first-death-reason": "expired",
        "x-first-death-exchange": "magnetiq.tasks",
        "x-last-death-queue": queue,
        "x-delivery-count": 7,
        **extra,
    }
    message = Message(
        b'[[], {"payment_id": 1}, {}]',
        content_type="application/json",
        correlation_id="t-1",
        expiration="60000",
        application_headers=headers,
    )
    return DeadLetter.from_message(message)


def test_reads_the_latest_death() -> None:
    letter = dead()
    assert (letter.task_id, letter.task, letter.queue, letter.reason, letter.deaths) == (
        "t-1",
        PAYMENT,
        "booking",
        "rejected",
        2,
    )
    assert letter.died_at == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert letter.age(datetime(2026, 1, 1, 12, 1, tzinfo=UTC)) == 60
    assert letter.arguments() == [[], {"payment_id": 1}, {}]


def test_replay_keeps_body_properties_and_headers_without_the_death_record() -> None:
    replay = replay_message(dead())
    headers = replay.properties["application_headers"]
    assert replay.body == b'[[], {"payment_id": 1}, {}]'
    assert headers == {"id": "t-1", "task": PAYMENT, "sent_at": 1.5, REPLAYS_HEADER: 1}
    assert replay.properties["correlation_id"] == "t-1"
    assert replay.properties["delivery_mode"] == 2
    assert "expiration" not in replay.properties  # a replay must not expire on the way back


def test_replays_are_counted() -> None:
    assert replay_message(dead(**{REPLAYS_HEADER: 2})).properties["application_headers"][REPLAYS_HEADER] == 3


def test_route_is_the_routers() -> None:
    assert replay_route(dead()) == ("magnetiq.tasks", "booking.process_payment", "booking")


@pytest.mark.parametrize(
    ("letter", "error"),
    [
        (dead(task="old.task"), "has no route"),
        (
            dead(queue="email"),
            "died in email but app.tasks.booking_tasks.process_payment now routes to booking",
        ),
    ],
)
def test_route_refuses_what_would_not_go_back_where_it_died(letter: DeadLetter, error: str) -> None:
    with pytest.raises(ReplayError, match=error):
        replay_route(letter)


def test_a_foreign_message_without_death_headers_is_still_readable() -> None:
    letter = DeadLetter.from_message(Message(b"not json", application_headers={}))
    assert (letter.task_id, letter.queue, letter.died_at, letter.deaths, letter.age()) == (
        None,
        None,
        None,
        0,
        None,
    )
    assert letter.arguments() == "not json"


@pytest.mark.parametrize(("given", "dlq"), [("booking", "booking.dlq"), ("email.dlq", "email.dlq")])
def test_dlq_name(given: str, dlq: str) -> None:
    assert dlq_name(given) == dlq


def test_dlq_name_refuses_other_queues() -> None:
    with pytest.raises(ValueError, match="not a fleet queue"):
        dlq_name("celery")
