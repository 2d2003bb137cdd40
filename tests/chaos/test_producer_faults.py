"""Producer-side faults: a producer killed between its database commit and its publish."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.chaos.harness import ROOT, Chaos
from tests.support.waiting import wait_until


def test_producer_killed_between_commit_and_publish(chaos: Chaos) -> None:
    chaos.start_worker("booking", "--concurrency", "2")
    chaos.payments(120)  # payments 1-120 exist; only committed outbox rows may ever process one
    chaos.start_relay()

    producer = subprocess.Popen(
        [sys.executable, "-m", "tests.chaos.outbox_producer", "1", "120", "83"], cwd=ROOT
    )
    chaos.processes.append(producer)
    assert producer.wait(120) == -signal.SIGKILL  # killed right after committing payment 83
    operations = chaos.outbox_operations()
    committed = {o.op for o in operations}
    assert committed == {n for n in range(1, 84) if n % 10}  # rolled-back and never-reached ones absent
    wait_until(lambda: chaos.published_from_outbox() == len(operations), 60, "the relay to publish every row")

    report = chaos.settle("producer killed after commit (outbox)", operations)
    assert report.succeeded == len(operations)  # 83 itself too: committed, never published by its producer
    # Payments whose transaction rolled back or never ran were never processed (else: unexpected > 0).
    assert report.unexpected == 0
