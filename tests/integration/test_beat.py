"""Real beat processes on per-second schedules: one leader, failover, restarts, each slot sent once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from kombu import Connection
from sqlalchemy import Connection as Database
from sqlalchemy import text

from app import contracts
from app.maintenance import runs as beat_runs
from app.producer import send
from routing import names
from tests.support.broker import queue_depth
from tests.support.cli import magnetiq
from tests.support.environment import worker_env
from tests.support.paths import ROOT
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
            **overrides,
        )
        beat = WorkerProcess("beat", tmp_path / f"beat-{index}.log", env, [])
        started.append(beat)
        wait_until(lambda: role(beat) is not None, PATIENCE, f"beat {index} to lead or stand by")
        return beat

    yield start
    for beat in started:
        beat.stop()


StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def maintenance_worker(broker: Connection, database: Any, tmp_path: Path) -> Iterator[StartWorker]:
    """Start real maintenance workers that stop when the test ends (so later tests see their queue)."""
    started: list[WorkerProcess] = []

    def start(*extra: str) -> WorkerProcess:
        # LOG_EACH_TASK: tests read what a copy of a slot's message returned from its succeeded line
        env = worker_env(LOG_EACH_TASK="true")
        worker = WorkerProcess("maintenance", tmp_path / f"worker-{len(started)}.log", env, list(extra))
        started.append(worker)

        def consuming() -> bool:
            if worker.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{worker.log()}")
            return queue_depth(broker, names.MAINTENANCE)[1] >= 1 and "ready." in worker.log()

        wait_until(consuming, PATIENCE, "the maintenance worker to consume", interval=0.2)
        return worker

    yield start
    for worker in started:
        worker.stop()


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


def drain_messages(broker: Connection) -> list[tuple[datetime, str]]:
    """Take every message off the maintenance queue; return (slot, task id) of each, in queue order."""
    messages = []
    with broker.channel() as channel:
        while (message := channel.basic_get(names.MAINTENANCE, no_ack=True)) is not None:
            _, kwargs, _ = json.loads(message.body)
            assert kwargs["job"] == "tick"
            messages.append((datetime.fromisoformat(kwargs["slot"]), message.headers["id"]))
    return messages


def recorded_ids(database: Any) -> dict[datetime, str]:
    """Slot -> the task id its committed claim recorded, for every run of ``tick``."""
    with database.connect() as db:
        rows = db.execute(text("SELECT slot, task_id FROM periodic_runs WHERE job = 'tick'"))
        return {row.slot: row.task_id for row in rows}


def relayed(database: Any) -> bool:
    """Whether every claimed slot's task left the outbox (a beat stopped mid-tick leaves some)."""
    with database.connect() as db:
        return not db.execute(text("SELECT count(*) FROM task_outbox WHERE sent_at IS NULL")).scalar()


def stop_when_relayed(beat: WorkerProcess, database: Any) -> None:
    """Stop ``beat`` once what it claimed is published (a stop mid-tick leaves it to a next leader)."""
    wait_until(lambda: relayed(database), PATIENCE, "the claimed slots to be relayed")
    beat.stop()


def assert_each_slot_sent_once(
    broker: Connection, database: Any, *, copies: bool = False
) -> list[tuple[datetime, str]]:
    """Every second from the first slot to the last was sent, recorded, and under its claim's task id.

    With ``copies``, a slot may have been published again under that same id (a relay
    killed between the broker's confirm and its stamp); a message under any other id
    is a send outside a committed claim.
    """
    messages = drain_messages(broker)
    recorded = recorded_ids(database)
    sent = [slot for slot, _ in messages]
    if not copies:
        assert len(sent) == len(set(sent)), f"a slot was sent twice: {Counter(sent).most_common(2)}"
    assert sorted(set(sent)) == sorted(recorded), "messages and recorded runs differ"
    strays = [(slot, task_id) for slot, task_id in messages if task_id != recorded[slot]]
    assert strays == [], "a message outside its slot's committed claim"
    assert all(task_id == beat_runs.slot_task_id("tick", slot) for slot, task_id in recorded.items())
    ordered = sorted(recorded)
    gaps = [(a, b) for a, b in pairwise(ordered) if b - a != timedelta(seconds=1)]
    assert gaps == [], f"slots skipped: {gaps}"
    return runs(database)


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
    stop_when_relayed(first, database)

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


def leader_and_standby(
    start_beat: StartBeat, database: Any, slots: int
) -> tuple[WorkerProcess, WorkerProcess]:
    """Start a leader, then a standby (short leases); return both once ``slots`` more slots are claimed."""
    leader = start_beat("EVERY_SECOND", lease=SHORT_LEASE_SECONDS)
    wait_until(lambda: role(leader) == "leading", PATIENCE, "the first beat to lead")
    standby = start_beat("EVERY_SECOND", lease=SHORT_LEASE_SECONDS)
    both_up = db_now(database)
    wait_until(lambda: sent_after(database, both_up, slots), PATIENCE, "slots from the leader")
    return leader, standby


def test_standby_takes_over_from_a_killed_leader(
    start_beat: StartBeat, broker: Connection, database: Any
) -> None:
    # given a leader and a standby
    leader, standby = leader_and_standby(start_beat, database, 2)

    # when the leader is killed outright (no lease hand-over), just after it claimed a slot
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
    stop_when_relayed(standby, database)

    # and every slot, across the failover, went out under its one claim: the old leader's, then the
    # new one's (a kill mid-relay leaves a copy under the same id, which the task runs once)
    recorded = assert_each_slot_sent_once(broker, database, copies=True)
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
    wait_until(lambda: relayed(database), PATIENCE, "the claimed slots to be relayed")
    assert before.stop() == 0
    last_sent = runs(database)[-1][0]

    # when slot boundaries pass with no beat running, and a new beat starts
    wait_until(lambda: db_now(database) >= last_sent + timedelta(seconds=2), PATIENCE, "two slots to pass")
    after = start_beat("EVERY_SECOND")
    wait_until(lambda: role(after) == "leading", PATIENCE, "the new beat to lead")
    restarted = db_now(database)
    wait_until(lambda: sent_after(database, restarted, 2, holder(after)), PATIENCE, "new slots")
    stop_when_relayed(after, database)

    # then the slots missed while down were sent once by the new beat, and none sent before again
    recorded = assert_each_slot_sent_once(broker, database)
    missed = [sent_by for slot, sent_by in recorded if last_sent < slot <= last_sent + timedelta(seconds=2)]
    assert missed == [holder(after), holder(after)]
    assert {sent_by for slot, sent_by in recorded if slot <= last_sent} == {holder(before)}


def test_beat_and_a_worker_run_each_job_once_per_slot_and_list_shows_it(
    start_beat: StartBeat, maintenance_worker: StartWorker, database: Any
) -> None:
    # given a maintenance worker, and a beat leading on two per-second jobs
    maintenance_worker()
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
        "bulk.dlq",
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


#: The advisory lock a ``CommitGate`` holds; gated commits wait for it.
GATE_KEY = 740531
#: Fault injection in the database: a deferred constraint trigger makes the gated COMMIT
#: wait for the test's lock, so a beat can be killed at that exact moment.
GATE_DDL = """
CREATE OR REPLACE FUNCTION beat_test_gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_xact_lock({key}); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER beat_test_gate AFTER {event} ON {table} DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW {when} EXECUTE FUNCTION beat_test_gate();
"""
#: Counts each start of a slot's run (the job's effect), in the transaction that starts it.
STARTS_DDL = """
CREATE TABLE IF NOT EXISTS beat_test_starts (job text NOT NULL, slot timestamptz NOT NULL);
TRUNCATE beat_test_starts;
CREATE OR REPLACE FUNCTION beat_test_start() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO beat_test_starts VALUES (NEW.job, NEW.slot); RETURN NEW; END $$;
CREATE OR REPLACE TRIGGER beat_test_start AFTER INSERT OR UPDATE ON periodic_runs FOR EACH ROW
    WHEN (NEW.status = 'started') EXECUTE FUNCTION beat_test_start();
"""


class CommitGate:
    """Holds the commits of one kind of write until the test lets them through."""

    def __init__(self, database: Any) -> None:
        self.database = database
        self.holder: Database | None = None

    def close(self, table: str, event: str, when: str = "") -> None:
        """Make every transaction that does ``event`` on ``table`` wait at its COMMIT."""
        self.holder = self.database.connect()
        self.holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": GATE_KEY})
        self.holder.commit()
        ddl = GATE_DDL.format(key=GATE_KEY, event=event, table=table, when=when)
        with self.database.begin() as db:
            db.execute(text(ddl))

    def waiting(self) -> int:
        """Wait until a commit waits at the gate; return its server process id."""

        def blocked() -> int | None:
            with self.database.connect() as db:
                return db.execute(
                    text(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                        "AND objid = :key AND database = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database())"
                    ),
                    {"key": GATE_KEY},
                ).scalar()

        pid: int = wait_until(blocked, PATIENCE, "a commit to wait at the gate", interval=0.01)
        return pid

    def open(self) -> None:
        """Let gated commits through, then remove the gate."""
        if self.holder is None:
            return
        self.holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": GATE_KEY})
        self.holder.commit()
        self.holder.close()
        self.holder = None
        with self.database.begin() as db:
            db.execute(text("DROP TRIGGER IF EXISTS beat_test_gate ON periodic_runs"))
            db.execute(text("DROP TRIGGER IF EXISTS beat_test_gate ON task_outbox"))
            db.execute(text("DROP FUNCTION IF EXISTS beat_test_gate()"))


@pytest.fixture
def gate(database: Any) -> Iterator[CommitGate]:
    """A commit gate, always opened and removed at the end."""
    opened = CommitGate(database)
    try:
        yield opened
    finally:
        opened.open()


@pytest.fixture
def starts(database: Any) -> Iterator[Callable[[], Counter[datetime]]]:
    """Count each start of a ``tick`` slot's run (by slot), recorded by a trigger."""
    with database.begin() as db:
        db.execute(text(STARTS_DDL))

    def counted() -> Counter[datetime]:
        with database.connect() as db:
            rows = db.execute(text("SELECT slot FROM beat_test_starts WHERE job = 'tick'")).scalars()
            return Counter(rows)

    yield counted
    with database.begin() as db:  # leave the schema as the migrations made it
        db.execute(text("DROP TRIGGER IF EXISTS beat_test_start ON periodic_runs"))
        db.execute(text("DROP FUNCTION IF EXISTS beat_test_start()"))
        db.execute(text("DROP TABLE IF EXISTS beat_test_starts"))


def kill_at_the_gate(beat: WorkerProcess, gate: CommitGate, database: Any, *, commit: bool) -> None:
    """SIGKILL ``beat`` while its commit waits at the gate; the commit then fails or goes through.

    Without ``commit`` the server ends the dead client's session (as it does when it
    notices the closed socket), so the transaction rolls back. With it, the commit
    completes after its client died: the outcome a client killed during COMMIT cannot know.
    """
    backend = gate.waiting()
    beat.proc.send_signal(signal.SIGKILL)
    beat.proc.wait(10)
    if not commit:
        with database.connect() as db:
            assert db.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend}).scalar()
        wait_until(lambda: not backend_alive(database, backend), PATIENCE, "the session to end")
    gate.open()


def backend_alive(database: Any, pid: int) -> bool:
    with database.connect() as db:
        return bool(
            db.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).scalar()
        )


@pytest.mark.parametrize("commit", [False, True], ids=["claim-rolled-back", "claim-committed"])
def test_a_leader_killed_while_committing_a_claim_leaves_each_slot_sent_once(
    start_beat: StartBeat, broker: Connection, database: Any, gate: CommitGate, commit: bool
) -> None:
    # given a leader and a standby
    leader, standby = leader_and_standby(start_beat, database, 1)

    # when the leader is killed while the commit of its next claim waits in the database
    gate.close("periodic_runs", "INSERT")
    kill_at_the_gate(leader, gate, database, commit=commit)
    killed_at = db_now(database)

    # then the standby takes over and sends on
    wait_until(lambda: role(standby) == "leading", SHORT_LEASE_SECONDS * 2 + 5, "the standby to take over")
    wait_until(
        lambda: sent_after(database, killed_at, 2, holder(standby)), PATIENCE, "slots from the new leader"
    )
    stop_when_relayed(standby, database)

    # and every slot went out once, under its slot's task id: a claim that rolled back sent
    # nothing (the new leader sent the slot), one that committed was relayed by the new leader
    assert_each_slot_sent_once(broker, database)


def test_a_relay_killed_between_confirm_and_stamp_runs_the_slot_once(
    start_beat: StartBeat,
    maintenance_worker: StartWorker,
    broker: Connection,
    database: Any,
    gate: CommitGate,
    starts: Callable[[], Counter[datetime]],
) -> None:
    # given a maintenance worker, a leader and a standby
    worker = maintenance_worker()
    leader, standby = leader_and_standby(start_beat, database, 1)

    # when the leader is killed after the broker confirmed a slot, before the relay's stamp commits
    gate.close("task_outbox", "UPDATE", "WHEN (NEW.sent_at IS NOT NULL)")
    kill_at_the_gate(leader, gate, database, commit=False)
    with database.connect() as db:
        [(twice, task_id)] = db.execute(
            text("SELECT kwargs->>'slot', task_id FROM task_outbox WHERE sent_at IS NULL")
        )
    killed_at = db_now(database)
    wait_until(
        lambda: sent_after(database, killed_at, 2, holder(standby)), PATIENCE, "slots from the new leader"
    )
    stop_when_relayed(standby, database)

    # then the new leader published that slot again, under the same task id ...
    slot = datetime.fromisoformat(twice)
    assert task_id == beat_runs.slot_task_id("tick", slot)
    wait_until(lambda: f"Already ran tick for slot {slot.isoformat()}" in worker.log(), PATIENCE, "the copy")

    # ... and the worker ran it once: every slot's run started exactly once
    last = runs(database)[-1][0]
    wait_until(lambda: last in starts(), PATIENCE, "the last slot to run")
    counted = starts()
    assert counted[slot] == 1
    assert set(counted.values()) == {1}
    assert sorted(counted) == [recorded for recorded, _ in runs(database)]


def test_a_second_message_of_a_running_slot_does_nothing(
    maintenance_worker: StartWorker, database: Any, starts: Callable[[], Counter[datetime]]
) -> None:
    # given a worker with two processes, and a slot whose run will wait on a row the test locks
    worker = maintenance_worker("--concurrency", "2")
    slot = datetime(2026, 12, 1, 3, 15, tzinfo=UTC)
    task_id = beat_runs.slot_task_id("tick", slot)
    with database.begin() as db:
        db.execute(
            text(
                "INSERT INTO sessions (id, user_id, created_at) VALUES ('old', 1, now() - interval '8 days')"
            )
        )
        assert beat_runs.claim_slot(db, "tick", slot, task_id, "beat-a", fenced=False)
    with database.connect() as lock:
        lock.execute(text("SELECT * FROM sessions FOR UPDATE"))

        # when the slot's message is delivered twice (the relay published it again) while it runs
        kwargs = {"job": "tick", "slot": slot.isoformat()}
        send(contracts.CLEANUP_OLD_SESSIONS, kwargs, task_id=task_id)
        wait_until(lambda: starts()[slot] == 1, PATIENCE, "the first delivery to start the run")
        send(contracts.CLEANUP_OLD_SESSIONS, kwargs, task_id=task_id)

        # then the second delivery does nothing while the first runs
        wait_until(lambda: "Already running tick" in worker.log(), PATIENCE, "the second delivery")
        lock.rollback()

    # and the run finishes once, with its effect
    wait_until(lambda: runs_status(database, slot) == "succeeded", PATIENCE, "the run to finish")
    assert starts()[slot] == 1
    with database.connect() as db:
        assert db.execute(text("SELECT count(*) FROM sessions")).scalar() == 0
        detail = db.execute(text("SELECT detail FROM periodic_runs WHERE slot = :s"), {"s": slot}).scalar()
    assert detail == {"result": "Cleaned up 1 expired sessions"}


def runs_status(database: Any, slot: datetime) -> str | None:
    with database.connect() as db:
        status: str | None = db.execute(
            text("SELECT status FROM periodic_runs WHERE job = 'tick' AND slot = :s"), {"s": slot}
        ).scalar()
        return status


def test_beat_refuses_a_celery_beat_schedule_and_says_where_jobs_go(tmp_path: Path) -> None:
    # given the seed's way to add a job: an entry in celery_app.conf.beat_schedule
    script = (
        "from app.celery_app import celery_app\n"
        "celery_app.conf.beat_schedule = {'nightly-cleanup': {\n"
        "    'task': 'app.tasks.maintenance.cleanup_old_sessions', 'schedule': 60.0}}\n"
        "celery_app.start(['beat', '--loglevel', 'INFO'])\n"
    )
    # when beat starts with it
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )

    # then it refuses to start, naming the entry and where periodic jobs go, and sends nothing
    assert done.returncode != 0
    assert "beat_schedule has entries (nightly-cleanup)" in done.stderr + done.stdout
    assert "app/maintenance/schedule.py" in done.stderr + done.stdout
    assert "beat: leading" not in done.stderr + done.stdout
