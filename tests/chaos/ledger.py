"""The harness's ledgers outside its database: task executions from files, charges from the provider.

Executions are written by ``tests.chaos.faults`` to one append-only file per
worker process, so they are counted even while PostgreSQL is down. Charges
are what the case's own payment provider made, attributed to a payment by
the description the repository gives every charge (``payment <id>``),
whatever idempotency key it was made under.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from tests.support.payment_provider import Ledger

#: The description ``SqlPaymentRepository.process`` gives a payment's charge, before the payment id.
CHARGE_PREFIX = "payment "


@dataclass(frozen=True)
class Execution:
    """One task execution, as a worker process recorded it when the task started."""

    op: int | None
    task_id: str
    task_name: str
    pid: int
    at: float


def read_executions(directory: Path) -> list[Execution]:
    """Every execution recorded in ``directory``, oldest first.

    A line still being written (no newline yet) is left for the next read.
    """
    found: list[Execution] = []
    for path in sorted(directory.glob("*.jsonl")):
        written = path.read_text()
        complete = written[: written.rfind("\n") + 1]
        found += [Execution(**json.loads(line)) for line in complete.splitlines()]
    return sorted(found, key=lambda execution: execution.at)


def store_executions(engine: Engine, executions: list[Execution]) -> None:
    """Replace the rows of ``chaos_executions`` with ``executions`` (for queries joining other tables)."""
    with engine.begin() as db:
        db.execute(text("TRUNCATE chaos_executions"))
        if executions:
            db.execute(
                text(
                    "INSERT INTO chaos_executions (op, task_id, task_name, pid, at) "
                    "VALUES (:op, :task_id, :task_name, :pid, to_timestamp(:at))"
                ),
                [asdict(execution) for execution in executions],
            )


def payment_of(charge: dict[str, Any]) -> int | None:
    """The payment id a charge names, None when it names none."""
    description = str(charge.get("description", ""))
    number = description.removeprefix(CHARGE_PREFIX)
    return int(number) if description.startswith(CHARGE_PREFIX) and number.isdigit() else None


def charges_per_payment(ledger: Ledger) -> Counter[int | None]:
    """How many charges the provider made for each payment (None: charges naming no payment)."""
    with ledger.lock:
        charges = list(ledger.charges.values())
    return Counter(payment_of(charge) for charge in charges)


#: The tables and triggers that record executions and effects (created once per case).
LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS chaos_executions (
    op bigint, task_id text, task_name text, pid integer, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS chaos_effects (
    op bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION chaos_payment_effect() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO chaos_effects (op) VALUES (NEW.id); RETURN NEW; END $$;
CREATE OR REPLACE TRIGGER chaos_payment_effect AFTER UPDATE ON payments FOR EACH ROW
    WHEN (NEW.status = 'processed') EXECUTE FUNCTION chaos_payment_effect();
CREATE OR REPLACE FUNCTION chaos_run_effect() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO chaos_effects (op) VALUES (extract(epoch FROM NEW.slot)::bigint); RETURN NEW; END $$;
CREATE OR REPLACE TRIGGER chaos_run_effect AFTER INSERT OR UPDATE ON periodic_runs FOR EACH ROW
    WHEN (NEW.status = 'started') EXECUTE FUNCTION chaos_run_effect();
"""
