"""Real beat processes on per-second schedules: one leader, failover, restarts, each slot sent once."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from kombu import Connection
from sqlalchemy import text

from app.maintenance import runs as beat_runs
from routing import names
from tests.support.cli import magnetiq
from tests.support.environment import worker_env
from tests.support.ports import free_port
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess

#: Lease of the test beats: long enough that a loaded machine never makes a live leader lose it.
LEASE_SECONDS = 10
#: The shorter lease of the failover test: a killed leader's standby takes over within 4 s.
SHORT_LEASE_SECONDS = 3
#: Bound on any wait for a beat to lead, take over or send (slow shared machine).
PATIENCE = 60

StartBeat = Callable[..., WorkerProcess]


@pytest.fixture
def start_beat(broker: Connection, database: Any, tmp_path: Path) -> Iterator[StartBeat]:
    """Start real ``python -m workers beat`` processes on a schedule of ``beat_schedules``."""
    started: list[WorkerProcess] = []

    def start(schedule: str, lease: float = LEASE_SECONDS, **overrides: str) -> WorkerProcess:
        index = len(started)
        env = worker_env(
            MAINTENANCE_SCHEDULE=f"tests.integration.beat_schedules:{schedule}",
            BEAT_LEASE_SECONDS=str(lease),
            BEAT_SCHEDULE_FILE=str(tmp_path / f"beat-{index}.state"),
            **overrides,
        )
        beat = WorkerProcess("beat", tmp_path / f"beat-{index}.log", env, [])
        started.append(beat)
        wait_until(lambda: role(beat) is not None, PATIENCE, f"beat {index} to lead or stand by")
        return beat

    yield start
    for beat in started:
        beat.stop()


def role(beat: WorkerProcess) -> str | None:
    """``leading`` or ``standby``, as the beat's log last said; fails if the process died."""
    if beat.proc.poll() is not None:
        raise AssertionError(f"beat exited early:\n{beat.log()}")
    lines = [
        line for line in beat.log().splitlines() if "beat: leading as" in line or "beat: standby" in line
    ]
    if not lines:
        return None
    return "leading" if "leading as" in lines[-1] else "standby"


def holder(beat: WorkerProcess) -> str:
    """The lease holder name the beat announced."""
    for line in beat.log().splitlines():
        if "beat: leading as " in line or "beat: standby as " in line:
            return line.split(" as ", 1)[1].split(";", 1)[0].strip()
    raise AssertionError(f"beat never announced itself:\n{beat.log()}")


def runs(database: Any, job: str = "tick") -> list[tuple[datetime, str]]:
    """(slot, sent_by) of every recorded run of ``job``, by slot."""
    with database.connect() as db:
        rows = db.execute(
            text("SELECT slot, sent_by FROM periodic_runs WHERE job = :job ORDER BY slot"), {"job": job}
        )
        return [(row.slot, row.sent_by) for row in rows]


def db_now(database: Any) -> datetime:
    with database.connect() as db:
        now: datetime = db.execute(text("SELECT now()")).scalar_one()
        return now


def sent_after(database: Any, moment: datetime, count: int, sent_by: str | None = None) -> bool:
    return len([run for run in runs(database) if run[0] > moment and sent_by in (None, run[1])]) >= count


def drain_slots(broker: Connection) -> list[datetime]:
    """Take every message off the maintenance queue; return the slots they carry, in queue order."""
    slots = []
    with broker.channel() as channel:
        while (message := channel.basic_get(names.MAINTENANCE, no_ack=True)) is not None:
            _, kwargs, _ = json.loads(message.body)
            assert kwargs["job"] == "tick"
            slots.append(datetime.fromisoformat(kwargs["slot"]))
    return slots


def assert_each_slot_sent_once(broker: Connection, database: Any) -> list[tuple[datetime, str]]:
    """Every second from the first slot to the last was sent exactly once, and recorded."""
    sent = drain_slots(broker)
    recorded = runs(database)
    assert len(sent) == len(set(sent)), "a slot was sent twice"
    assert sorted(sent) == [slot for slot, _ in recorded], "messages and recorded runs differ"
    ordered = sorted(sent)
    gaps = [(a, b) for a, b in pairwise(ordered) if b - a != timedelta(seconds=1)]
    assert gaps == [], f"slots skipped: {gaps}"
    return recorded


def test_two_beats_send_each_slot_once(start_beat: StartBeat, broker: Connection, database: Any) -> None:
    # given a leader and a standby on the same per-second schedule, each serving /metrics
    ports = [free_port(), free_port()]
    first = start_beat("EVERY_SECOND", METRICS_PORT=str(ports[0]))
    wait_until(lambda: role(first) == "leading", PATIENCE, "the first beat to lead")
    second = start_beat("EVERY_SECOND", METRICS_PORT=str(ports[1]))
    assert role(second) == "standby"
    both_up = db_now(database)

    # when both run for several slots
    wait_until(lambda: sent_after(database, both_up, 5), PATIENCE, "five slots with both beats up")
    leader_metrics, standby_metrics = (scrape(port) for port in ports)
    second.stop()  # the standby first: a stopped leader hands its lease over at once
    first.stop()

    # then each slot went out once, all from the leader, and the standby never sent
    recorded = assert_each_slot_sent_once(broker, database)
    assert {sent_by for _, sent_by in recorded} == {holder(first)}
    assert "beat: sent" not in second.log()

    # and /metrics says which replica leads, and when the leader last published the job
    assert "magnetiq_beat_leader 1.0" in leader_metrics.splitlines()
    assert "magnetiq_beat_leader 0.0" in standby_metrics.splitlines()
    last_run = 'magnetiq_beat_last_run_timestamp_seconds{name="app.tasks.maintenance.cleanup_old_sessions"}'
    assert last_run in leader_metrics
    assert last_run not in standby_metrics


def scrape(port: int) -> str:
    """The text of a beat's /metrics."""
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body: bytes = response.read()
        return body.decode()


def test_standby_takes_over_from_a_killed_leader(
    start_beat: StartBeat, broker: Connection, database: Any
) -> None:
    # given a leader and a standby
    leader = start_beat("EVERY_SECOND", lease=SHORT_LEASE_SECONDS)
    wait_until(lambda: role(leader) == "leading", PATIENCE, "the first beat to lead")
    standby = start_beat("EVERY_SECOND", lease=SHORT_LEASE_SECONDS)
    both_up = db_now(database)
    wait_until(lambda: sent_after(database, both_up, 2), PATIENCE, "slots from the leader")

    # when the leader is killed outright (no lease hand-over), just after it sent a slot
    # (killed between the broker's confirm and its commit it would leave an unrecorded
    # message, sent again by the next leader: the task's own check covers that case)
    sent = len(runs(database))
    wait_until(lambda: len(runs(database)) > sent, PATIENCE, "the leader's next slot", interval=0.01)
    leader.proc.kill()
    leader.proc.wait(10)
    killed_at = db_now(database)

    # then the standby leads within the lease's bound and sends on
    wait_until(lambda: role(standby) == "leading", SHORT_LEASE_SECONDS * 2 + 5, "the standby to take over")
    wait_until(
        lambda: sent_after(database, killed_at, 3, holder(standby)), PATIENCE, "slots from the new leader"
    )
    standby.stop()

    # and every slot, across the failover, went out exactly once: the old leader's, then the new one's
    recorded = assert_each_slot_sent_once(broker, database)
    senders = [sent_by for _, sent_by in recorded]
    switch = senders.index(holder(standby))
    assert set(senders[:switch]) == {holder(leader)}
    assert set(senders[switch:]) == {holder(standby)}


def test_restart_across_a_slot_boundary_neither_repeats_nor_skips(
    start_beat: StartBeat, broker: Connection, database: Any
) -> None:
    # given one beat that sent some slots, then stopped
    before = start_beat("EVERY_SECOND")
    wait_until(lambda: role(before) == "leading", PATIENCE, "the beat to lead")
    started = db_now(database)
    wait_until(lambda: sent_after(database, started, 2), PATIENCE, "two slots")
    assert before.stop() == 0
    last_sent = runs(database)[-1][0]

    # when slot boundaries pass with no beat running, and a new beat starts
    wait_until(lambda: db_now(database) >= last_sent + timedelta(seconds=2), PATIENCE, "two slots to pass")
    after = start_beat("EVERY_SECOND")
    wait_until(lambda: role(after) == "leading", PATIENCE, "the new beat to lead")
    restarted = db_now(database)
    wait_until(lambda: sent_after(database, restarted, 2, holder(after)), PATIENCE, "new slots")
    after.stop()

    # then the slots missed while down were sent once by the new beat, and none sent before again
    recorded = assert_each_slot_sent_once(broker, database)
    missed = [sent_by for slot, sent_by in recorded if last_sent < slot <= last_sent + timedelta(seconds=2)]
    assert missed == [holder(after), holder(after)]
    assert {sent_by for slot, sent_by in recorded if slot <= last_sent} == {holder(before)}


def test_beat_and_a_worker_run_each_job_once_per_slot_and_list_shows_it(
    start_beat: StartBeat, start_worker: Callable[..., WorkerProcess], database: Any
) -> None:
    # given a maintenance worker, and a beat leading on two per-second jobs
    start_worker("maintenance")
    beat = start_beat("TWO_JOBS")
    wait_until(lambda: role(beat) == "leading", PATIENCE, "the beat to lead")

    # when the jobs have run a few slots
    def succeeded(job: str) -> list[Any]:
        with database.connect() as db:
            rows = db.execute(
                text("SELECT * FROM periodic_runs WHERE job = :job AND status = 'succeeded' ORDER BY slot"),
                {"job": job},
            )
            return list(rows)

    wait_until(lambda: len(succeeded("every-3s")) >= 2, PATIENCE, "two runs of every-3s")
    wait_until(lambda: len(succeeded("every-1s")) >= 3, PATIENCE, "three runs of every-1s")

    # then each run ran its task on the worker and recorded the result per slot
    cleanup = succeeded("every-3s")[0]
    assert cleanup.detail == {"result": "Cleaned up 0 expired sessions"}
    assert cleanup.slot.second % 3 == 0
    assert [row["queue"] for row in succeeded("every-1s")[0].detail["result"]] == [
        "email.dlq",
        "booking.dlq",
        "maintenance.dlq",
    ]

    # and the schedule lists the leader and each job's last and next run
    listed = magnetiq("schedule", "list", MAINTENANCE_SCHEDULE="tests.integration.beat_schedules:TWO_JOBS")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(f"leader: {holder(beat)} (lease until ")
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"every-3s", "every-1s"}
    for name, row in rows.items():
        last = datetime.fromisoformat(f"{row[7]}T{row[8]}+00:00")
        upcoming = datetime.fromisoformat(f"{row[10]}T{row[11]}+00:00")
        assert last < upcoming, name
        assert row[9] in {"sent", "started", "succeeded"}


def test_a_beat_that_lost_its_lease_cannot_claim_a_slot(database: Any) -> None:
    # given a lease that beat "a" held but let expire, and beat "b" that took it
    assert beat_runs.hold_lease(database, "a", 30).leader
    assert beat_runs.release_lease(database, "a")
    lease = beat_runs.hold_lease(database, "b", 30)
    assert (lease.leader, lease.holder) == (True, "b")
    assert not beat_runs.hold_lease(database, "a", 30).leader
    slot = lease.now.replace(microsecond=0)

    # when the old leader still tries to claim a slot (a pause outlived its lease)
    with database.begin() as db:
        stale = beat_runs.claim_slot(db, "tick", slot, "task-a", "a")
    with database.begin() as db:
        current = beat_runs.claim_slot(db, "tick", slot, "task-b", "b")
    with database.begin() as db:
        again = beat_runs.claim_slot(db, "tick", slot, "task-b2", "b")

    # then only the lease holder's first claim of the slot counts
    assert (stale, current, again) == (False, True, False)
    assert runs(database) == [(slot, "b")]
