"""Transactional outbox: a task is published if and only if the producer's transaction commits.

A producer that changes the database and must queue a task in step with that
change writes the task into ``task_outbox`` with ``add`` on its own connection,
inside its own transaction (beat writes each slot's task with ``write``, in the
transaction that claims the slot). The relay (``magnetiq outbox relay``) publishes
committed rows with publisher confirms and stamps them sent. A producer killed
after its commit loses nothing (the row waits for the relay); a rolled-back
transaction publishes nothing. A relay killed between a confirm and its stamp
publishes that row again under the same task id: delivery is at least once, and
every task is idempotent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from datetime import datetime
from typing import Any

from amqp.exceptions import AMQPError
from kombu.exceptions import KombuError
from kombu.utils.uuid import uuid
from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from app import contracts
from app.producer import PUBLISH_TIMEOUT, send
from app.schema import task_outbox

log = logging.getLogger(__name__)

#: Rows the relay locks and publishes per transaction.
BATCH = 100
#: Seconds the relay sleeps when the outbox is empty.
POLL_INTERVAL = 1.0


def add(connection: Connection, task_name: str, model: type[contracts.Arguments], **arguments: Any) -> str:
    """Validate a task and write it to the outbox in ``connection``'s open transaction.

    Args:
        connection: the producer's connection, inside the transaction the task belongs to.
        task_name: the task's dotted name (a ``contracts`` constant).
        model: the task's argument model.
        **arguments: the task's keyword arguments.

    Returns:
        The task id it will be published under (for ``AsyncResult``).

    Raises:
        contracts.InvalidTaskArguments: the arguments can never be valid.
    """
    return write(connection, task_name, contracts.validate_arguments(task_name, model, arguments))


def write(
    connection: Connection,
    task_name: str,
    arguments: contracts.Arguments,
    *,
    task_id: str | None = None,
    headers: dict[str, Any] | None = None,
    expires_at: datetime | None = None,
) -> str:
    """Write validated ``arguments`` to the outbox in ``connection``'s open transaction.

    Args:
        connection: a connection inside the transaction the task belongs to.
        task_name: the task's dotted name.
        arguments: the task's arguments, validated (``contracts.validate_arguments``).
        task_id: the id to publish under (beat passes its slot's); a fresh one by default.
        headers: message headers to publish with.
        expires_at: past this moment a worker drops the message unstarted.

    Returns:
        The task id it will be published under.
    """
    task_id = task_id or uuid()
    connection.execute(
        insert(task_outbox).values(
            task_id=task_id,
            task_name=task_name,
            kwargs=arguments.model_dump(mode="json"),
            headers=headers,
            expires_at=expires_at,
        )
    )
    return task_id


def relay_once(
    engine: Engine,
    batch: int = BATCH,
    timeout: float = PUBLISH_TIMEOUT,
    task_names: Collection[str] | None = None,
) -> int:
    """Publish up to ``batch`` committed, unsent rows in id order; return how many were confirmed.

    Rows are locked with ``SKIP LOCKED``, so several relays share the work. The
    first refused publish stops the batch; its row keeps the error and is tried again.
    ``task_names`` limits the relay to those tasks (beat relays its jobs' rows).
    """
    sent = 0
    query = select(task_outbox).where(task_outbox.c.sent_at.is_(None))
    if task_names is not None:
        query = query.where(task_outbox.c.task_name.in_(list(task_names)))
    with engine.begin() as db:
        rows = db.execute(
            query.order_by(task_outbox.c.id).limit(batch).with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            stamp = update(task_outbox).where(task_outbox.c.id == row.id)
            try:
                send(
                    row.task_name,
                    row.kwargs,
                    task_id=row.task_id,
                    timeout=timeout,
                    headers=row.headers,
                    expires=row.expires_at,
                )
            except (AMQPError, KombuError, OSError) as exc:  # TimeoutError is an OSError
                error = f"{type(exc).__name__}: {exc}"
                db.execute(stamp.values(attempts=task_outbox.c.attempts + 1, last_error=error[:500]))
                log.warning("outbox relay: publishing %s[%s] failed: %s", row.task_name, row.task_id, error)
                break
            db.execute(stamp.values(attempts=task_outbox.c.attempts + 1, sent_at=func.now(), last_error=None))
            sent += 1
    return sent


def relay(
    engine: Engine,
    stop: threading.Event,
    batch: int = BATCH,
    poll_interval: float = POLL_INTERVAL,
    timeout: float = PUBLISH_TIMEOUT,
) -> None:
    """Relay until ``stop`` is set, sleeping ``poll_interval`` when idle or after an error."""
    while not stop.is_set():
        try:
            sent = relay_once(engine, batch, timeout)
        except DBAPIError as exc:
            log.warning("outbox relay: database error, retrying: %s", type(exc).__name__)
            sent = 0
        if sent < batch:
            stop.wait(poll_interval)
