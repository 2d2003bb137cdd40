"""Producer helpers' ``countdown``/``eta``: whole seconds for native delayed delivery, bad values refused."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app import producer
from app.producer import delay_seconds
from app.settings import get_settings
from app.tasks.email_tasks import send_welcome_email
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


@pytest.fixture
def redis_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings naming a Redis broker with a one-hour horizon for delayed tasks."""
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://localhost:6379/0")
    monkeypatch.setenv("REDIS_ETA_HORIZON", "3600")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_on_redis_a_delay_beyond_the_horizon_is_refused_before_publishing(redis_broker: None) -> None:
    # given a Redis broker, where a worker holds a delayed task unacked until it runs
    # then a delay within the horizon is taken, and one beyond it refused with the setting's name
    assert delay_seconds(countdown=3600) == 3600
    with pytest.raises(ValueError, match="REDIS_ETA_HORIZON"):
        delay_seconds(countdown=3601)
    with pytest.raises(ValueError, match="REDIS_ETA_HORIZON"):
        delay_seconds(eta=datetime.now(UTC) + timedelta(hours=2))
    # and so is a seed-style apply_async, before anything is sent
    with pytest.raises(ValueError, match="REDIS_ETA_HORIZON"):
        send_welcome_email.apply_async(("ada@example.com", "Ada"), countdown=7200)
