"""Producer helpers' ``countdown``/``eta``: whole seconds for native delayed delivery, bad values refused."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app import producer
from app.producer import delay_seconds
from routing.names import MAX_DELAY_SECONDS


@pytest.mark.parametrize(
    ("countdown", "seconds"),
    [
        (None, None),
        (0, None),
        (0.0, None),
        (0.2, 1),
        (1, 1),
        (1.5, 2),
        (30, 30),
        (MAX_DELAY_SECONDS, MAX_DELAY_SECONDS),
    ],
)
def test_a_countdown_becomes_whole_seconds_never_earlier(
    countdown: float | None, seconds: int | None
) -> None:
    # native delayed delivery refuses 0 < countdown < 1 and truncates fractions: round up instead
    assert delay_seconds(countdown=countdown) == seconds


def test_an_eta_becomes_the_whole_seconds_until_it() -> None:
    eta = datetime.now(UTC) + timedelta(seconds=10)
    assert delay_seconds(eta=eta) in {10, 11}  # ceil of what is left, measured a moment later
    assert delay_seconds(eta=datetime.now(UTC) - timedelta(seconds=5)) is None  # passed: at once
    other_zone = (datetime.now(UTC) + timedelta(seconds=90)).astimezone(datetime.now().astimezone().tzinfo)
    assert 89 <= (delay_seconds(eta=other_zone) or 0) <= 90


@pytest.mark.parametrize(
    ("delay", "message"),
    [
        ({"countdown": -1}, "must not be negative"),
        ({"countdown": math.nan}, "must be a number of seconds"),
        ({"countdown": math.inf}, "must be a number of seconds"),
        ({"countdown": "5"}, "must be a number of seconds"),
        ({"countdown": True}, "must be a number of seconds"),
        ({"countdown": MAX_DELAY_SECONDS + 1}, "exceeds native delayed delivery"),
        ({"eta": datetime(2030, 1, 1)}, "timezone-aware"),  # naive: the value under test
        ({"eta": "2030-01-01T00:00:00+00:00"}, "timezone-aware"),
        ({"eta": datetime.now(UTC) + timedelta(days=365 * 9)}, "exceeds native delayed delivery"),
        ({"countdown": 5, "eta": datetime.now(UTC)}, "not both"),
    ],
)
def test_a_bad_delay_is_refused_with_a_clear_error(delay: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        delay_seconds(**delay)


def test_a_helper_refuses_a_bad_delay_before_publishing() -> None:
    # given no broker at all (the helper must fail before it would connect)
    # when a helper is asked for a negative countdown
    # then it raises the validation error, not a connection error
    with pytest.raises(ValueError, match="must not be negative"):
        producer.enqueue_welcome_email("ana@example.com", "Ana", countdown=-5)
