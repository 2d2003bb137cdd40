"""The fault harness: record every operation, run real workers, inject a fault, drain, count.

Every operation is one task the harness publishes (a payment to process, or a
task that always crashes or raises). The producer side is recorded here (each
publish attempt, whether the broker confirmed it, the error if not); the worker
side is recorded where each fault leaves it intact: every task start in an
append-only file per worker process (``tests.chaos.faults``, read by
``tests.chaos.ledger``), each time a payment turns ``processed`` or a periodic
slot's run starts in ``chaos_effects`` (a trigger, in the same transaction as
the effect), and every charge in the case's own payment provider. After
draining, each operation must end as a success (its effect present, a payment
charged), a failure with a reason (a ``FAILURE`` result, or a publish the
producer was told failed), or a dead-lettered message.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from amqp.exceptions import AMQPError
from kombu import Connection
from kombu.exceptions import KombuError
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from app import contracts
from app.db import engine_for
from app.migrate import upgrade
from app.settings import sqlalchemy_url
from routing import declare_topology
from routing.topology import DEAD_LETTER_QUEUES, TASK_QUEUES
from tests.chaos import faults
from tests.chaos.ledger import (
    LEDGER_DDL,
    Execution,
    charges_per_payment,
    read_executions,
    store_executions,
)
from tests.chaos.operations import Operation, outcome_of, publish_as_producer
from tests.chaos.report import Report, render
from tests.chaos.smtp import FaultySmtp
from tests.chaos.workers import Worker
from tests.support.payment_provider import Ledger
from tests.support.processes import descendants
from tests.support.servers import PostgresCluster, RabbitNode
from tests.support.waiting import wait_until as wait_for

ROOT = Path(__file__).resolve().parents[2]
WORK_QUEUES = [queue.name for queue in TASK_QUEUES]
ALL_QUEUES = [*WORK_QUEUES, *(queue.name for queue in DEAD_LETTER_QUEUES)]
#: Seconds the producer keeps retrying one operation before it reports it refused.
PRODUCER_DEADLINE = 90.0


class Chaos:
    """One case's harness: servers, workers, the ledger, the producer, the drain and the counts."""

    def __init__(
        self,
        rabbit: RabbitNode,
        postgres: PostgresCluster,
        database: str,
        tmp: Path,
        provider: tuple[str, Ledger],
    ) -> None:
        self.rabbit = rabbit
        self.postgres = postgres
        self.url = postgres.url(database)
        self.tmp = tmp
        self.provider_url, self.provider = provider  # this case's own payment provider
        self.executions_dir = tmp / "executions"  # the workers' execution files (tests.chaos.faults)
        self.executions_dir.mkdir()
        self.workers: list[Worker] = []
        self.processes: list[subprocess.Popen[bytes]] = []  # relays and producers of this case
        self.reports: list[Report] = []
        self.dead: dict[str, str] = {}  # task id -> dead-letter reason, for every DLQ message seen
        self.smtp: FaultySmtp | None = None  # the SMTP server of an email case
        upgrade(self.url)
        self.engine: Engine = engine_for(sqlalchemy_url(self.url))
        with self.engine.begin() as db:
            db.execute(text(LEDGER_DDL))

    def broker(self) -> Connection:
        """A fresh kombu connection to the private node."""
        return Connection(self.rabbit.url(), connect_timeout=5)

    def reset(self) -> None:
        """Declare the topology, empty every queue and every table the cases use."""
        self.reset_broker()
        with self.engine.begin() as db:
            tables = (
                "payments, task_results, task_outbox, chaos_executions, chaos_effects, email_deliveries, "
                "periodic_runs, beat_leases, chord_counters, chord_parts, group_results"
            )
            db.execute(text(f"TRUNCATE {tables} RESTART IDENTITY"))

    def reset_broker(self) -> None:
        """Declare the topology and empty every queue."""
        with self.broker() as connection:
            declare_topology(connection)
            with connection.channel() as channel:
                for queue in ALL_QUEUES:
                    channel.queue_purge(queue)

    def close(self) -> None:
        """Stop this case's workers and connections."""
        for worker in self.workers:
            worker.stop()
        if self.smtp is not None:
            self.smtp.stop()
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
        self.engine.dispose()

    # -- workers -----------------------------------------------------------------------------------

    def start_worker(self, role: str, *extra: str, delay: float = 0.0, **settings: str) -> Worker:
        """Start a worker of ``role`` (``settings``: extra environment); return it once it consumes."""
        env = dict(os.environ)
        env.update(
            CHAOS_TASK_DELAY=str(delay),
            CHAOS_EXECUTIONS_DIR=str(self.executions_dir),
            PAYMENT_PROVIDER_URL=self.provider_url,
            HEALTH_DIR=str(self.tmp / "health"),
            METRICS_PORT="0",
            LOG_LEVEL="INFO",
            **settings,
        )
        if self.smtp is not None:
            env.update(SMTP_HOST="127.0.0.1", SMTP_PORT=str(self.smtp.port), SMTP_TIMEOUT="5")
        worker = Worker(role, self.tmp / f"{role}-{len(self.workers)}.log", env, list(extra))
        self.workers.append(worker)
        self.wait_consuming(worker)
        return worker

    def signal(self, pid: int, signum: int) -> None:
        """Signal a process of one of this case's workers (checked against their process trees)."""
        family = {p for w in self.workers for p in (w.proc.pid, *descendants(w.proc.pid))}
        assert pid in family, f"pid {pid} is not one of the harness's workers"
        os.kill(pid, signum)

    def wait_consuming(self, worker: Worker, timeout: float = 60) -> None:
        """Wait until ``worker`` consumes its queue (it must not exit meanwhile)."""

        def consuming() -> bool:
            if worker.proc.poll() is not None:
                raise AssertionError(f"{worker.role} worker exited:\n{worker.log()[-4000:]}")
            return self.consumers(worker.role) >= 1 and "ready." in worker.log()

        wait_for(consuming, timeout, f"{worker.role} worker to consume")

    def consumers(self, queue: str) -> int:
        """Consumers of ``queue`` now (0 when the broker is unreachable)."""
        try:
            with self.broker() as connection, connection.channel() as channel:
                return int(channel.queue_declare(queue, passive=True)[2])
        except Exception:
            return 0

    # -- operations --------------------------------------------------------------------------------

    def emails(
        self, count: int, first: int = 1, task_name: str = contracts.SEND_WELCOME_EMAIL
    ) -> list[Operation]:
        """Start this case's SMTP server; return ``count`` email operations (welcome emails by default)."""
        if self.smtp is None:
            self.smtp = FaultySmtp()
            self.smtp.start()
        return [Operation(op, task_name, "success") for op in range(first, first + count)]

    def payments(self, count: int, first: int = 1) -> list[Operation]:
        """Create ``count`` pending payments; return one process-payment operation for each."""
        ops = [Operation(op, contracts.PROCESS_PAYMENT, "success") for op in range(first, first + count)]
        with self.engine.begin() as db:
            db.execute(
                text("INSERT INTO payments (id, amount_cents) VALUES (:id, 100)"), [{"id": o.op} for o in ops]
            )
        return ops

    def executions(self) -> int:
        """Task executions recorded so far (the files are there while the database is away too)."""
        return len(read_executions(self.executions_dir))

    def execution_log(self, op: int | None = None) -> list[Execution]:
        """Every execution recorded so far (of operation ``op`` only, when given), oldest first."""
        return [e for e in read_executions(self.executions_dir) if op is None or e.op == op]

    def midway(
        self, operations: list[Operation], published: int, executed: int, timeout: float = 180
    ) -> None:
        """Wait until the producer confirmed ``published`` operations and workers started ``executed``."""
        wait_for(lambda: self.published(operations) >= published, timeout, f"{published} confirmed publishes")
        wait_for(lambda: self.executions() >= executed, timeout, f"{executed} task executions")

    def published(self, operations: list[Operation]) -> int:
        """Operations the broker confirmed so far."""
        return sum(o.confirmed for o in operations)

    def send(self, operation: Operation) -> None:
        """Publish one operation, retrying under the same task id until confirmed or past the deadline."""
        deadline = time.monotonic() + PRODUCER_DEADLINE
        while True:
            operation.attempts += 1
            started = time.monotonic()
            try:
                self._publish(operation)
                operation.confirmed, operation.error = True, None
                return
            except Exception as exc:  # the producer records every refusal with its reason
                operation.error = f"{type(exc).__name__}: {exc}"
            finally:
                operation.slowest = max(operation.slowest, time.monotonic() - started)
            if time.monotonic() > deadline:
                return
            time.sleep(0.5)

    def _publish(self, operation: Operation) -> None:
        publish_as_producer(operation)

    def produce(
        self, operations: list[Operation], copies: int = 1, interval: float = 0.0
    ) -> threading.Thread:
        """Publish every operation (``copies`` times each: duplicate delivery) from a background thread.

        ``interval`` paces the producer (seconds between operations) so a fault lands mid-run.
        """

        def run() -> None:
            for operation in operations:
                for _ in range(copies):
                    self.send(operation)
                time.sleep(interval)

        thread = threading.Thread(target=run, name="chaos-producer", daemon=True)
        thread.start()
        return thread

    # -- drain and count ---------------------------------------------------------------------------

    def collect_dead_letters(self) -> None:
        """Move every DLQ message into ``self.dead`` (task id -> reason), acking it."""
        with self.broker() as connection, connection.channel() as channel:
            for queue in DEAD_LETTER_QUEUES:
                while (message := channel.basic_get(queue.name, no_ack=False)) is not None:
                    headers = message.headers or {}
                    deaths = headers.get("x-death") or [{}]
                    self.dead[str(headers.get("id"))] = str(deaths[0].get("reason", "unknown"))
                    channel.basic_ack(message.delivery_tag)

    def results(self) -> dict[str, str]:
        """Task id -> stored status."""
        with self.engine.connect() as db:
            return {row[0]: row[1] for row in db.execute(text("SELECT task_id, status FROM task_results"))}

    def queued(self) -> int:
        """Messages in the work queues, ready or unacknowledged (from rabbitmqctl)."""
        out = self.rabbit.ctl("list_queues", "name", "messages", "--no-table-headers")
        counts = dict(line.split() for line in out.splitlines() if line.strip())
        return sum(int(counts.get(queue, 0)) for queue in WORK_QUEUES)

    def drain(
        self, producer: threading.Thread | None, operations: list[Operation], timeout: float = 240
    ) -> None:
        """Wait for the producer, then for every confirmed operation to settle and the queues to empty."""
        if producer is not None:
            producer.join(PRODUCER_DEADLINE * 3)
            errors = Counter(o.error for o in operations if o.error)
            assert not producer.is_alive(), f"the producer hung; its errors: {errors.most_common(3)}"

        def settled() -> bool:
            try:
                self.collect_dead_letters()
                results = self.results()
            except (OperationalError, OSError, AMQPError, KombuError):
                self.engine.dispose()  # a server was restarted under the harness too
                return False
            return all(
                o.task_id in self.dead or results.get(o.task_id) in ("SUCCESS", "FAILURE")
                for o in operations if o.confirmed
            )  # fmt: skip

        try:
            wait_for(settled, timeout, "every operation to settle")
            wait_for(lambda: self.queued() == 0, 60, "the work queues to empty")
        except TimeoutError:
            pass  # count what is there: the table shows what never settled
        self.collect_dead_letters()

    def count(self, case: str, operations: list[Operation], keep: bool = True) -> Report:
        """Count the case from the ledgers and return its report (kept for the table with ``keep``)."""
        results = self.results()
        executed = read_executions(self.executions_dir)
        store_executions(self.engine, executed)  # for cases that join them with other tables
        executions = Counter(e.op for e in executed)
        with self.engine.connect() as db:
            effects = Counter(db.execute(text("SELECT op FROM chaos_effects")).scalars())
        charges = charges_per_payment(self.provider)
        copies = self._count_emails(effects)
        known = {o.op for o in operations}
        outcomes: Counter[str] = Counter()
        not_as_expected = 0
        for o in operations:
            outcome = outcome_of(o, results.get(o.task_id), o.task_id in self.dead, effects, charges)
            outcomes[outcome] += 1
            not_as_expected += outcome not in ("lost", o.expect)
        twice = {op for op, n in effects.items() if n > 1} | {op for op, n in charges.items() if n > 1}
        report = Report(
            case=case,
            operations=len(operations),
            succeeded=outcomes["success"],
            failed=outcomes["failure"],
            dead_lettered=outcomes["dlq"],
            refused=outcomes["refused"],
            lost=outcomes["lost"],
            unexpected=sum(n for op, n in effects.items() if op not in known)
            + sum(n for op, n in executions.items() if op is not None and op not in known)
            + sum(n for op, n in charges.items() if op not in known),  # a charge naming no payment too
            duplicate_effects=len(twice),
            duplicate_executions=sum(1 for op, n in executions.items() if op in known and n > 1),
            not_as_expected=not_as_expected,
            slowest_publish=max((o.slowest for o in operations), default=0.0),
            duplicate_deliveries=sum(1 for n in copies.values() if n),
            charges=charges.total(),
        )
        if keep:
            self.reports.append(report)
        return report

    def _count_emails(self, effects: Counter[int]) -> Counter[int]:
        """Add each email the SMTP server accepted to ``effects``; return the duplicate deliveries per op.

        An email's effect is a distinct Message-ID the SMTP server accepted (250): the
        at-least-once-with-a-dedup-key contract. Another copy under the same Message-ID
        is a duplicate delivery a receiver drops; a second Message-ID is a second email.
        """
        copies: Counter[int] = Counter()
        if self.smtp is not None:
            for (to, _), n in self.smtp.copies.items():
                op = int(to.split("@")[0].removeprefix("op-"))
                effects[op] += 1
                copies[op] += n > 1
        return copies

    def run(
        self,
        case: str,
        operations: list[Operation],
        fault: Callable[[], None],
        copies: int = 1,
        interval: float = 0.0,
    ) -> Report:
        """Publish ``operations`` while ``fault`` runs, drain, count, and fail on any broken promise."""
        producer = self.produce(operations, copies, interval)
        try:
            fault()
        except (AssertionError, TimeoutError) as exc:
            errors = Counter(o.error for o in operations if o.error).most_common(3)
            raise AssertionError(f"{case}: the fault step failed ({exc}); producer errors: {errors}") from exc
        return self.settle(case, operations, producer)

    def settle(
        self,
        case: str,
        operations: list[Operation],
        producer: threading.Thread | None = None,
        check: bool = True,
        timeout: float = 240,
    ) -> Report:
        """Drain (for at most ``timeout`` s), count, and fail on any broken promise.

        With ``check=False`` (the harness's self-check) the report is returned
        unchecked and left out of the table.
        """
        self.drain(producer, operations, timeout)
        report = self.count(case, operations, keep=check)
        if not check:
            return report
        assert not report.problems(), f"{case}: {', '.join(report.problems())}\n{render([report])}"
        return report


__all__ = ["Chaos", "faults"]
