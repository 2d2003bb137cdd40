"""Beat started twice, and its leader killed: every periodic slot runs exactly once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from app import contracts
from tests.chaos.harness import Chaos, Operation, Worker, beat_role
from tests.support.waiting import wait_until as wait_for

#: The beats' lease: a killed leader's standby takes over within about 1⅓ of it.
LEASE_SECONDS = 4
#: The per-second job of ``tests.integration.beat_schedules.EVERY_SECOND``.
JOB = "tick"


def leader(beats: list[Worker]) -> Worker:
    """The one live beat that leads (waiting for a takeover if none does yet)."""
    found: list[Worker] = []

    def one_leads() -> bool:
        found[:] = [b for b in beats if b.proc.poll() is None and beat_role(b) == "leading"]
        return len(found) == 1

    wait_for(one_leads, LEASE_SECONDS * 3 + 30, "one beat to lead")
    return found[0]


def more_slots(chaos: Chaos, count: int) -> None:
    """Wait until ``count`` more slots are recorded."""
    target = len(chaos.slots(JOB)) + count
    wait_for(lambda: len(chaos.slots(JOB)) >= target, 90, f"{count} more slots")


def slot_operations(chaos: Chaos) -> list[Operation]:
    """One operation per second from the first recorded slot to the last, with the run's task id.

    A second with no recorded run has no task id: it counts as lost.
    """
    recorded = dict(chaos.slots(JOB))
    first, last = min(recorded), max(recorded)
    operations = []
    slot = first
    while slot <= last:
        task_id = recorded.get(slot) or f"never-sent-{slot.isoformat()}"
        operations.append(
            Operation(int(slot.timestamp()), contracts.CLEANUP_OLD_SESSIONS, "success", task_id, 1, True)
        )
        slot += timedelta(seconds=1)
    return operations


def test_beat_started_twice_and_its_leader_killed(chaos: Chaos) -> None:
    # given a real maintenance worker and two beats on a per-second schedule
    chaos.start_worker("maintenance")
    beats = [chaos.start_beat("EVERY_SECOND", LEASE_SECONDS)]
    leader(beats)
    beats.append(chaos.start_beat("EVERY_SECOND", LEASE_SECONDS))
    assert beat_role(beats[1]) == "standby"
    more_slots(chaos, 5)

    # when the leader is killed -9 right after one of its sends, twice, and a new beat
    # joins after each kill so two always run
    for _ in range(2):
        victim = leader(beats)
        sent = len(chaos.slots(JOB))
        wait_for(lambda: len(chaos.slots(JOB)) > sent, 30, "the leader's next send")  # noqa: B023
        victim.kill()
        beats.append(chaos.start_beat("EVERY_SECOND", LEASE_SECONDS))
        leader(beats)
        more_slots(chaos, 4)
    for beat in beats:
        beat.stop()
    wait_for(lambda: chaos.queued() == 0, 120, "the maintenance queue to empty")

    # then every second from the first slot to the last ran exactly once
    operations = slot_operations(chaos)
    report = chaos.settle("beat twice, leader killed -9 twice", operations, timeout=120)
    assert report.succeeded == len(operations) >= 15
    # The standbys never send. A slot runs twice at most once per kill: a leader killed between
    # the broker's confirm and its commit leaves a message the next leader sends again, and
    # the task's own check (``run_once``) keeps that to one effect.
    assert report.duplicate_executions <= 2
    with chaos.engine.connect() as db:
        ran = db.execute(text("SELECT DISTINCT op FROM chaos_executions WHERE op IS NOT NULL")).scalars()
        senders = db.execute(text("SELECT count(DISTINCT sent_by) FROM periodic_runs")).scalar_one()
    assert set(ran) == {o.op for o in operations}  # each slot's execution was recorded under its slot
    assert senders == 3  # the first leader, then the standby after each kill
