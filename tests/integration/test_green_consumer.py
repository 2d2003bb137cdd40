"""Green pools' consumer loop polls the event connection instead of waiting on it."""

from __future__ import annotations

import time

from kombu import Connection

from tests.support.environment import TEST_BROKER_URL
from workers.consumer import EVENT_DRAIN_SECONDS, _drain_event_connection

TURNS = 20


def test_draining_an_idle_event_connection_does_not_wait(broker: Connection) -> None:
    # given an event connection on which nothing arrives (task events off)
    with Connection(TEST_BROKER_URL, heartbeat=30) as connection:
        connection.ensure_connection(max_retries=1)

        # when the consumer loop drains it once per message, 20 times
        started = time.monotonic()
        for _ in range(TURNS):
            _drain_event_connection(connection)
        elapsed = time.monotonic() - started

    # then it did not wait Celery's 0.1 s each time (>= 2 s in all): that wait
    # capped a gevent worker at ~10 tasks/s
    assert EVENT_DRAIN_SECONDS < 0.1
    assert elapsed < TURNS * 0.1 * 0.9
