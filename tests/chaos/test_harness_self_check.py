"""The harness catches what it is there to catch: effects done twice, tasks lost, effects nobody asked for."""

from __future__ import annotations

from tests.chaos.faults import APPLY_UNGUARDED
from tests.chaos.harness import Chaos, Operation


def test_an_effect_without_an_idempotency_guard_is_counted_twice(chaos: Chaos) -> None:
    chaos.start_worker("booking", "--concurrency", "2")
    chaos.payments(30)
    operations = [Operation(op, APPLY_UNGUARDED, "success") for op in range(1, 31)]
    producer = chaos.produce(operations, copies=2)

    report = chaos.settle("self-check: unguarded effect", operations, producer, check=False)
    assert report.duplicate_effects == 30
    assert "duplicate effects = 30" in report.problems()


def test_a_task_the_broker_drops_is_counted_lost(chaos: Chaos) -> None:
    operations = chaos.payments(20)
    producer = chaos.produce(operations)
    producer.join(60)
    with chaos.broker() as connection, connection.channel() as channel:
        channel.queue_purge("booking")  # as a broker that lost confirmed messages would
    chaos.start_worker("booking")

    report = chaos.settle("self-check: dropped", operations, check=False, timeout=5)
    assert report.lost == 20
    assert "lost = 20" in report.problems()
    assert "accounted 0 of 20" in report.problems()


def test_work_nobody_asked_for_is_counted_unexpected(chaos: Chaos) -> None:
    chaos.start_worker("booking")
    operations = chaos.payments(10)
    chaos.settle("self-check: all ten", operations, chaos.produce(operations), check=False)

    report = chaos.count("self-check: five asked", operations[:5], keep=False)
    assert report.unexpected == 10  # five effects and five executions of operations 6-10
    assert "unexpected = 10" in report.problems()
