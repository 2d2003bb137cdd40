"""The transactional outbox against the real database and broker: published iff committed."""

from __future__ import annotations

from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import select

from app import contracts, outbox
from app.schema import task_outbox
from routing import declare_topology, names
from tests.support.broker import queue_depth


class Abort(Exception):
    pass


def test_only_committed_rows_are_relayed_once(broker: Connection, database: Any) -> None:
    with database.begin() as db:
        committed = outbox.add(db, contracts.PROCESS_PAYMENT, contracts.ProcessPaymentArgs, payment_id=1)
    with pytest.raises(Abort), database.begin() as db:
        outbox.add(db, contracts.PROCESS_PAYMENT, contracts.ProcessPaymentArgs, payment_id=2)
        raise Abort

    assert outbox.relay_once(database) == 1
    assert outbox.relay_once(database) == 0  # stamped sent: never published twice by the relay
    assert queue_depth(broker, names.BOOKING)[0] == 1
    with broker.channel() as channel:
        message = channel.basic_get(names.BOOKING, no_ack=True)
    assert message.headers["id"] == committed
    with database.connect() as db:
        row = db.execute(select(task_outbox.c.task_id, task_outbox.c.sent_at, task_outbox.c.attempts)).one()
    assert row.task_id == committed and row.sent_at is not None and row.attempts == 1


def test_an_invalid_task_never_reaches_the_outbox(database: Any) -> None:
    with pytest.raises(contracts.InvalidTaskArguments), database.begin() as db:
        outbox.add(db, contracts.PROCESS_PAYMENT, contracts.ProcessPaymentArgs, payment_id="1")
    with database.connect() as db:
        assert db.execute(select(task_outbox)).all() == []


def test_an_unroutable_task_is_an_error_and_stays_in_the_outbox(broker: Connection, database: Any) -> None:
    with database.begin() as db:
        outbox.add(db, contracts.PROCESS_PAYMENT, contracts.ProcessPaymentArgs, payment_id=4)
    with broker.channel() as channel:  # a vhost whose booking queue lost its bindings
        for key in (names.binding_key(names.BOOKING), f"#.{names.BOOKING}.#"):
            channel.queue_unbind(names.BOOKING, names.TASKS_EXCHANGE, key)
    try:
        assert outbox.relay_once(database) == 0
    finally:
        declare_topology(broker)
    with database.connect() as db:
        row = db.execute(select(task_outbox.c.sent_at, task_outbox.c.last_error)).one()
    assert row.sent_at is None and "NO_ROUTE" in row.last_error
    assert outbox.relay_once(database) == 1  # bound again: relayed
