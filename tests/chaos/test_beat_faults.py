"""Beat's leader killed -9 at random moments, 20 times, a standby taking over: every slot runs once."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from app import contracts
from app.maintenance.runs import slot_task_id
from tests.chaos.harness import Chaos
from tests.chaos.operations import Operation
from tests.chaos.workers import Worker, beat_role
from tests.support.waiting import wait_until as wait_for

#: The beats' lease: a killed leader's standby takes over within about 1⅓ of it.
LEASE_SECONDS = 4
#: Leaders killed in the case; a new beat joins after each kill, so two always run.
KILLS = 20
#: The per-second job of ``tests.integration.beat_schedules.EVERY_SECOND``.
JOB = "tick"
#: Seconds after a slot boundary in which a leader claims the slot and relays it: half the
#: kills land in this stretch, the rest anywhere in the second.
SEND_STRETCH = 0.05


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
    target = len(slots(chaos, JOB)) + count
    wait_for(lambda: len(slots(chaos, JOB)) >= target, 90, f"{count} more slots")


def random_moment(rng: random.Random) -> None:
    """Sleep until a random moment: half the time just after a slot boundary, else anywhere."""
    if rng.random() < 0.5:
        time.sleep(1 - time.time() % 1 + rng.uniform(0, SEND_STRETCH))
    else:
        time.sleep(rng.uniform(0, 1))


def slot_operations(chaos: Chaos) -> list[Operation]:
    """One operation per second from the first recorded slot to the last, with the slot's task id.

    A second with no recorded run has a task id nothing ran under: it counts as lost.
    """
    recorded = dict(slots(chaos, JOB))
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


def start_beat(chaos: Chaos, schedule: str, lease: float) -> Worker:
    """Start a beat (the fleet's ``LeaderScheduler``) on a ``tests.integration.beat_schedules`` schedule.

    Returns it once it announced itself as leader or standby.
    """
    env = dict(os.environ)
    index = len(chaos.workers)
    env.update(
        MAINTENANCE_SCHEDULE=f"tests.integration.beat_schedules:{schedule}",
        BEAT_LEASE_SECONDS=str(lease),
        METRICS_PORT="0",
        LOG_LEVEL="INFO",
    )
    beat = Worker("beat", chaos.tmp / f"beat-{index}.log", env, [])
    chaos.workers.append(beat)

    def announced() -> bool:
        if beat.proc.poll() is not None:
            raise AssertionError(f"beat exited:\n{beat.log()[-4000:]}")
        return beat_role(beat) is not None

    wait_for(announced, 60, "beat to lead or stand by")
    return beat


def slots(chaos: Chaos, job: str) -> list[tuple[Any, str]]:
    """(slot, task id) of every run ``periodic_runs`` records for ``job``, by slot."""
    with chaos.engine.connect() as db:
        rows = db.execute(
            text("SELECT slot, task_id FROM periodic_runs WHERE job = :job ORDER BY slot"), {"job": job}
        )
        return [(row.slot, row.task_id) for row in rows]


def test_beat_leader_killed_at_random_moments(chaos: Chaos) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or time.time_ns())
    rng = random.Random(seed)
    began = time.monotonic()

    # given a real maintenance worker and two beats on a per-second schedule
    chaos.start_worker("maintenance")
    beats = [start_beat(chaos, "EVERY_SECOND", LEASE_SECONDS)]
    leader(beats)
    beats.append(start_beat(chaos, "EVERY_SECOND", LEASE_SECONDS))
    assert beat_role(beats[1]) == "standby"
    more_slots(chaos, 3)

    # when the leader is killed -9 at a random moment, 20 times, and a new beat joins after
    # each kill so two always run; the standby takes over and sends on each time
    for _ in range(KILLS):
        victim = leader(beats)
        random_moment(rng)
        victim.kill()
        beats.append(start_beat(chaos, "EVERY_SECOND", LEASE_SECONDS))
        leader(beats)
        more_slots(chaos, 2)
    # the standby stops first: a leader stopped first releases its lease on the way out, and the
    # standby would take over (and send) in its own last moments
    last = leader(beats)
    for beat in [*(b for b in beats if b is not last), last]:
        beat.stop()
    wait_for(lambda: chaos.queued() == 0, 120, "the maintenance queue to empty")

    # then every second from the first slot to the last ran exactly once: no run lost, no
    # effect twice (``settle`` fails on either), each counted from the database
    operations = slot_operations(chaos)
    report = chaos.settle(f"beat leader killed -9 at random moments x{KILLS}", operations, timeout=120)
    assert report.succeeded == len(operations) >= KILLS * 2, f"seed {seed}"
    with chaos.engine.connect() as db:
        effects = Counter(db.execute(text("SELECT op FROM chaos_effects")).scalars())
        executed = db.execute(
            text("SELECT op, task_id FROM chaos_executions WHERE task_name = :name"),
            {"name": contracts.CLEANUP_OLD_SESSIONS},
        ).all()
        senders = db.execute(text("SELECT count(DISTINCT sent_by) FROM periodic_runs")).scalar_one()
    assert {op: effects[op] for op in (o.op for o in operations)} == {o.op: 1 for o in operations}, seed
    # and every message that ran carried its slot's task id: no message outside a committed claim
    # (a relay killed between a confirm and its stamp sends a second copy, under the same id)
    claimed = {int(slot.timestamp()): task_id for slot, task_id in slots(chaos, JOB)}
    strays = [(op, task_id) for op, task_id in executed if task_id != claimed[op]]
    assert strays == [], f"seed {seed}"
    assert all(task_id == slot_task_id(JOB, at(op)) for op, task_id in claimed.items())
    assert senders == KILLS + 1, f"seed {seed}"  # the first leader, then the standby after each kill
    copies = sum(n - 1 for n in Counter(op for op, _ in executed).values())
    took = time.monotonic() - began
    print(f"\nbeat kills: {len(operations)} slots, {copies} sent twice, seed {seed}, {took:.0f} s")


def at(op: int) -> datetime:
    """The slot whose epoch second ``op`` is."""
    return datetime.fromtimestamp(op, UTC)
