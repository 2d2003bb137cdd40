"""The harness catches what it is there to catch: effects done twice, tasks lost, effects nobody asked for.

It also counts what happens while its own database is down.
"""

from __future__ import annotations

from tests.chaos.faults import APPLY_UNGUARDED, CHARGE_UNGUARDED, TOUCH_NOTHING
from tests.chaos.harness import Chaos
from tests.chaos.operations import Operation
from tests.support.waiting import wait_until


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
    assert report.unexpected == 15  # five effects, five executions and five charges of operations 6-10
    assert "unexpected = 15" in report.problems()


def test_a_payment_charged_twice_is_a_duplicate_effect(chaos: Chaos) -> None:
    chaos.start_worker("booking", "--concurrency", "2")
    operations = [Operation(op, CHARGE_UNGUARDED, "success") for op in range(1, 21)]
    producer = chaos.produce(operations, copies=2)

    report = chaos.settle("self-check: unguarded charge", operations, producer, check=False)
    assert report.charges == 40
    assert report.duplicate_effects == 20
    assert "duplicate effects = 20" in report.problems()


def test_each_case_has_a_provider_of_its_own_that_charges_every_payment(chaos: Chaos) -> None:
    # Keys repeat from case to case (payment:1...): a provider kept from an earlier case would
    # answer from its cache and charge nothing.
    chaos.start_worker("booking", "--concurrency", "2")
    operations = chaos.payments(20)

    report = chaos.settle("self-check: charges", operations, chaos.produce(operations), check=False)
    assert (report.succeeded, report.charges, report.problems()) == (20, 20, [])


def test_a_processed_payment_the_provider_never_charged_is_lost(chaos: Chaos) -> None:
    chaos.start_worker("booking", "--concurrency", "2")
    operations = chaos.payments(10)
    chaos.settle("self-check: all charged", operations, chaos.produce(operations), check=False)
    with chaos.provider.lock:
        for charge in list(chaos.provider.charges)[:3]:
            del chaos.provider.charges[charge]  # as a provider that lost three charges would

    report = chaos.count("self-check: three charges lost", operations, keep=False)
    assert (report.succeeded, report.lost, report.charges) == (7, 3, 7)
    assert "lost = 3" in report.problems()


def test_executions_during_a_database_outage_are_counted(chaos: Chaos) -> None:
    # given a worker, then PostgreSQL down
    chaos.start_worker("booking", "--concurrency", "2")
    operations = [Operation(op, TOUCH_NOTHING, "success") for op in range(1, 11)]
    chaos.postgres.stop()
    try:
        # when every operation is delivered twice while the database is away
        producer = chaos.produce(operations, copies=2)
        producer.join(60)
        wait_until(lambda: chaos.executions() >= 20, 60, "20 executions while PostgreSQL is down")
    finally:
        chaos.postgres.start()

    # then every execution was recorded, so each operation's second run counts as a duplicate
    report = chaos.count("self-check: executions during an outage", operations, keep=False)
    assert chaos.executions() == 20
    assert report.duplicate_executions == 10
