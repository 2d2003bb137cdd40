"""RabbitMQ and PostgreSQL stopped, killed, frozen and restarted mid-run."""

from __future__ import annotations

import signal
import time

from tests.chaos.harness import Chaos
from tests.support.waiting import wait_until

#: Seconds between operations, so the producer is still publishing when the fault lands.
PACE = 0.05
#: Seconds workers have to consume again once the broker is back.
RESUME_WITHIN = 30


def resumed(chaos: Chaos) -> None:
    """Workers consume again within ``RESUME_WITHIN`` seconds."""
    wait_until(lambda: chaos.consumers("booking") >= 1, RESUME_WITHIN, "the worker to consume again")


def test_rabbitmq_stopped_and_started_mid_run(chaos: Chaos) -> None:
    chaos.start_worker("booking", "--concurrency", "2", delay=0.05)
    operations = chaos.payments(200)

    def fault() -> None:
        chaos.midway(operations, 60, 30)
        chaos.rabbit.stop_app()
        time.sleep(5)  # the outage
        chaos.rabbit.start_app()
        resumed(chaos)

    report = chaos.run("RabbitMQ stopped, started", operations, fault, interval=PACE)
    assert report.succeeded == 200
    assert any(o.attempts > 1 for o in operations)  # the producer saw the outage and retried


def test_rabbitmq_killed_mid_run(chaos: Chaos) -> None:
    chaos.start_worker("booking", "--concurrency", "2", delay=0.05)
    operations = chaos.payments(200)

    def fault() -> None:
        chaos.midway(operations, 60, 30)
        chaos.rabbit.kill()
        chaos.rabbit.start()
        resumed(chaos)

    report = chaos.run("RabbitMQ killed (-9), restarted", operations, fault, interval=PACE)
    assert report.succeeded == 200
    assert any(o.attempts > 1 for o in operations)


def test_rabbitmq_frozen_longer_than_the_heartbeat(chaos: Chaos) -> None:
    chaos.start_worker("booking", "--concurrency", "2", delay=0.05)
    operations = chaos.payments(150)

    def fault() -> None:
        chaos.midway(operations, 50, 25)
        chaos.rabbit.signal(signal.SIGSTOP)
        time.sleep(70)  # over two 30 s heartbeats: connections are declared dead
        chaos.rabbit.signal(signal.SIGCONT)
        resumed(chaos)

    report = chaos.run("RabbitMQ frozen 70 s (SIGSTOP)", operations, fault, interval=PACE)
    assert report.succeeded == 150


def test_postgresql_restarted_mid_run(chaos: Chaos) -> None:
    chaos.start_worker("booking", "--concurrency", "2", delay=0.05)
    operations = chaos.payments(200)

    def fault() -> None:
        chaos.midway(operations, 60, 30)
        chaos.postgres.restart()

    report = chaos.run("PostgreSQL restarted", operations, fault, interval=PACE)
    assert report.succeeded == 200


def test_postgresql_crashed_mid_run(chaos: Chaos) -> None:
    chaos.start_worker("booking", "--concurrency", "2", delay=0.05)
    operations = chaos.payments(200)

    def fault() -> None:
        chaos.midway(operations, 60, 30)
        chaos.postgres.crash()

    report = chaos.run("PostgreSQL crashed (-9), recovered", operations, fault, interval=PACE)
    assert report.succeeded == 200
