"""Producer-side faults: a producer killed between its database commit and its publish."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from app import contracts
from tests.chaos.harness import ROOT, Chaos
from tests.chaos.operations import Operation
from tests.support.waiting import wait_until


def outbox_operations(chaos: Chaos) -> list[Operation]:
    """One confirmed operation per committed outbox row (the commit is the producer's confirmation)."""
    with chaos.engine.connect() as db:
        rows = db.execute(text("SELECT task_id, kwargs FROM task_outbox ORDER BY id")).all()
    return [
        Operation(int(kwargs["payment_id"]), contracts.PROCESS_PAYMENT, "success", task_id, 1, True)
        for task_id, kwargs in rows
    ]


def published_from_outbox(chaos: Chaos) -> int:
    """Outbox rows the relay stamped sent."""
    with chaos.engine.connect() as db:
        return int(
            db.execute(text("SELECT count(*) FROM task_outbox WHERE sent_at IS NOT NULL")).scalar_one()
        )


def start_relay(chaos: Chaos) -> subprocess.Popen[bytes]:
    """Run ``magnetiq outbox relay`` (polling every 0.2 s) as a process of this case."""
    log = (chaos.tmp / f"relay-{len(chaos.processes)}.log").open("ab")
    relay = subprocess.Popen(
        [str(Path(sys.executable).parent / "magnetiq"), "outbox", "relay", "--interval", "0.2"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    chaos.processes.append(relay)
    return relay


def test_producer_killed_between_commit_and_publish(chaos: Chaos) -> None:
    chaos.start_worker("booking", "--concurrency", "2")
    chaos.payments(120)  # payments 1-120 exist; only committed outbox rows may ever process one
    start_relay(chaos)

    producer = subprocess.Popen(
        [sys.executable, "-m", "tests.chaos.outbox_producer", "1", "120", "83"], cwd=ROOT
    )
    chaos.processes.append(producer)
    assert producer.wait(120) == -signal.SIGKILL  # killed right after committing payment 83
    operations = outbox_operations(chaos)
    committed = {o.op for o in operations}
    assert committed == {n for n in range(1, 84) if n % 10}  # rolled-back and never-reached ones absent
    wait_until(lambda: published_from_outbox(chaos) == len(operations), 60, "the relay to publish every row")

    report = chaos.settle("producer killed after commit (outbox)", operations)
    assert report.succeeded == len(operations)  # 83 itself too: committed, never published by its producer
    # Payments whose transaction rolled back or never ran were never processed (else: unexpected > 0).
    assert report.unexpected == 0
