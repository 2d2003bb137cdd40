"""The fleet on the Redis broker: workers killed, Redis restarted and crashed, poison messages.

Each case runs on a private Redis with its AOF on (``appendfsync everysec``), as
the README recommends, and is counted from the same ledgers as the RabbitMQ
cases: the database's effects, the payment provider's charges, the workers'
execution files.
"""

from __future__ import annotations

import time

from tests.chaos.faults import ALWAYS_CRASH, ALWAYS_RAISE
from tests.chaos.operations import Operation
from tests.chaos.redis_harness import MALFORMED, RedisChaos
from tests.support.waiting import wait_until

#: Seconds between operations, so the producer is still publishing when the fault lands.
PACE = 0.05


def midway(chaos: RedisChaos, operations: list[Operation], published: int, executed: int) -> None:
    """Wait until ``published`` operations were taken by Redis and workers started ``executed``."""
    wait_until(lambda: chaos.published(operations) >= published, 120, f"{published} publishes")
    wait_until(lambda: chaos.executions() >= executed, 120, f"{executed} task executions")


def test_kill_9_a_whole_worker_on_redis(redis_chaos: RedisChaos) -> None:
    worker = redis_chaos.start_worker("booking", "--concurrency", "2", delay=0.1)
    operations = redis_chaos.payments(150)

    def fault() -> None:
        wait_until(lambda: redis_chaos.executions() >= 40, 120, "40 task executions")
        worker.kill()
        redis_chaos.start_worker("booking", "--concurrency", "2", delay=0.1)

    # the tasks the killed worker held come back after the visibility timeout (16 s here)
    report = redis_chaos.run("Redis: kill -9 whole worker", operations, fault)
    assert report.succeeded == 150


def test_redis_stopped_and_restarted_mid_run(redis_chaos: RedisChaos) -> None:
    worker = redis_chaos.start_worker("booking", "--concurrency", "2", delay=0.05)
    operations = redis_chaos.payments(200)

    def fault() -> None:
        midway(redis_chaos, operations, 60, 30)
        redis_chaos.redis.stop()  # SIGTERM: Redis writes its AOF out
        time.sleep(3)  # the outage
        redis_chaos.redis.start()
        wait_until(lambda: redis_chaos.consumers("booking") >= 1, 60, "the worker to consume again")

    report = redis_chaos.run("Redis: stopped, restarted (AOF)", operations, fault, interval=PACE)
    assert report.succeeded == 200
    assert any(o.attempts > 1 for o in operations)  # the producer saw the outage and retried
    assert worker.proc.poll() is None  # the worker that held messages stayed up


def test_redis_killed_and_restarted_mid_run(redis_chaos: RedisChaos) -> None:
    worker = redis_chaos.start_worker("booking", "--concurrency", "2", delay=0.05)
    operations = redis_chaos.payments(200)

    def fault() -> None:
        midway(redis_chaos, operations, 60, 30)
        redis_chaos.redis.kill()  # a crash: Redis comes back with what reached its AOF
        redis_chaos.redis.start()
        wait_until(lambda: redis_chaos.consumers("booking") >= 1, 60, "the worker to consume again")

    # every write Redis answered was in its AOF (written before the reply; fsync each second
    # guards against a machine crash, not a process crash): nothing taken is lost
    report = redis_chaos.run("Redis: killed (-9), restarted (AOF)", operations, fault, interval=PACE)
    assert report.succeeded == 200
    assert worker.proc.poll() is None


def test_poison_messages_on_redis(redis_chaos: RedisChaos) -> None:
    worker = redis_chaos.start_worker("booking", "--concurrency", "2")
    operations = redis_chaos.payments(100)
    crashing = [Operation(op, ALWAYS_CRASH, "dlq") for op in range(1001, 1004)]
    raising = [Operation(op, ALWAYS_RAISE, "dlq") for op in range(2001, 2006)]
    malformed = [Operation(op, MALFORMED, "dlq") for op in range(3001, 3004)]
    mixed = operations[:30] + crashing + operations[30:60] + malformed + raising + operations[60:]

    report = redis_chaos.run("Redis: poison messages", mixed, lambda: None)
    assert report.succeeded == len(operations)  # the others are unaffected
    assert report.dead_lettered == len(crashing) + len(raising) + len(malformed)
    assert {redis_chaos.dead[o.task_id] for o in crashing} == {"delivery_limit"}
    assert {redis_chaos.dead[o.task_id] for o in raising + malformed} == {"rejected"}
    assert worker.proc.poll() is None
