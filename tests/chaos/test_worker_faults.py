"""Worker processes killed, crashing and failing: nothing lost, nothing twice."""

from __future__ import annotations

import signal
import threading

from tests.chaos.faults import ALWAYS_CRASH, ALWAYS_RAISE
from tests.chaos.harness import Chaos
from tests.chaos.ledger import payment_of
from tests.chaos.operations import Operation
from tests.chaos.workers import Worker
from tests.support.processes import descendants, pid_alive
from tests.support.waiting import wait_until


def progress(chaos: Chaos, executions: int) -> None:
    """Wait until the workers have started ``executions`` tasks in all."""
    wait_until(lambda: chaos.executions() >= executions, 120, f"{executions} task executions")


def kill_mid_charge(chaos: Chaos, worker: Worker, spared: set[int]) -> int:
    """SIGKILL the pool process of ``worker`` that waits for the provider's reply to a charge.

    The provider makes the next charge of a payment not in ``spared`` and
    holds its reply, so the process that asked is certainly mid-task (the
    money moved, the payment row not yet updated) when it is killed; the
    reply is released only after the process is gone. Returns the payment.
    """
    while True:
        release, held = threading.Event(), chaos.provider.held
        chaos.provider.hold_next_charge = release
        wait_until(lambda: chaos.provider.held > held, 60, "a charge to reach the provider")  # noqa: B023
        op = payment_of(chaos.provider.held_bodies[-1])
        if op is not None and op not in spared:
            break
        release.set()  # a repeat of a payment already killed: let it through, hold the next one
    try:
        pid = chaos.execution_log(op)[-1].pid  # the process that started the payment last asked
        assert pid in descendants(worker.proc.pid), f"payment {op} runs in {pid}, not a pool process"
        chaos.signal(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 30, f"pool process {pid} to die")
    finally:
        release.set()
    return op


def test_kill_9_a_prefork_child_mid_task(chaos: Chaos) -> None:
    # The provider's timeout is longer than the harness ever holds a reply: the killed
    # process is still waiting for it, certainly mid-task.
    worker = chaos.start_worker("booking", "--concurrency", "2", delay=0.2, PAYMENT_PROVIDER_TIMEOUT="60")
    operations = chaos.payments(150)
    killed: list[int] = []

    def fault() -> None:
        for round_ in range(1, 4):
            progress(chaos, 30 * round_)
            killed.append(kill_mid_charge(chaos, worker, spared=set(killed)))

    report = chaos.run("kill -9 prefork child", operations, fault)
    assert report.succeeded == 150
    assert report.charges == 150  # each killed payment was charged before the kill, and once only
    for op in killed:  # each killed task ran again, to success
        assert len(chaos.execution_log(op)) >= 2, f"payment {op} was killed but never ran again"
    assert report.duplicate_executions >= len(killed) == 3


def test_kill_9_a_whole_worker(chaos: Chaos) -> None:
    worker = chaos.start_worker("booking", "--concurrency", "2", delay=0.1)
    operations = chaos.payments(150)

    def fault() -> None:
        progress(chaos, 40)
        worker.kill()
        chaos.start_worker("booking", "--concurrency", "2", delay=0.1)

    report = chaos.run("kill -9 whole worker", operations, fault)
    assert report.succeeded == 150


def test_a_task_that_always_crashes_its_process(chaos: Chaos) -> None:
    chaos.start_worker("booking", "--concurrency", "2")
    operations = chaos.payments(100)
    crashing = [Operation(op, ALWAYS_CRASH, "dlq") for op in range(1001, 1006)]
    mixed = operations[:50] + crashing + operations[50:]

    report = chaos.run("task always crashes its process", mixed, lambda: None)
    assert report.dead_lettered == len(crashing)
    assert report.succeeded == len(operations)  # the others are unaffected
    assert all(chaos.dead[o.task_id] == "delivery_limit" for o in crashing)


def test_a_task_that_always_raises(chaos: Chaos) -> None:
    chaos.start_worker("booking", "--concurrency", "2")
    operations = chaos.payments(100)
    raising = [Operation(op, ALWAYS_RAISE, "dlq") for op in range(2001, 2021)]

    report = chaos.run("task always raises", operations + raising, lambda: None)
    assert report.dead_lettered == len(raising)
    assert report.succeeded == len(operations)
    assert {chaos.results()[o.task_id] for o in raising} == {"FAILURE"}  # the reason is stored too
    assert all(chaos.dead[o.task_id] == "rejected" for o in raising)


def test_duplicate_delivery(chaos: Chaos) -> None:
    chaos.start_worker("booking", "--concurrency", "2")
    operations = chaos.payments(100)

    report = chaos.run("duplicate delivery", operations, lambda: None, copies=2)
    assert report.succeeded == 100
    assert report.duplicate_executions == 100  # every message ran twice; each payment took effect once
