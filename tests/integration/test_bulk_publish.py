"""enqueue_many against the real broker: confirmed fan-out, real worker runs, and named failures."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

import pytest
from celery import states
from celery.exceptions import QueueNotFound
from kombu import Connection, Queue
from sqlalchemy import text

from app import contracts, producer
from app.celery_app import celery_app
from routing import names, routes
from routing.topology import TASK_QUEUES, TASKS
from tests.support.broker import queue_depth
from tests.support.environment import TEST_BROKER_URL
from tests.support.worker_process import WorkerProcess


def welcome_calls(count: int) -> list[dict[str, Any]]:
    return [{"user_email": f"user{i}@example.com", "user_name": f"User {i}"} for i in range(count)]


def drain_ids(broker: Connection, queue: str) -> list[str]:
    """Take every message off ``queue`` and return their task ids, in queue order."""
    ids = []
    with broker.channel() as channel:
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            ids.append(message.headers["id"])
    return ids


def test_a_thousand_welcome_emails_land_on_the_email_queue(broker: Connection) -> None:
    # given 1,000 valid welcome-email calls
    calls = welcome_calls(1000)

    # when they are published in bulk
    results = producer.enqueue_many(contracts.SEND_WELCOME_EMAIL, calls, model=contracts.WelcomeEmailArgs)

    # then each has its own result, and the broker confirmed every one into the email queue
    assert len({result.id for result in results}) == 1000
    assert queue_depth(broker, names.EMAIL)[0] == 1000
    assert drain_ids(broker, names.EMAIL) == [result.id for result in results]


def test_bulk_messages_match_the_ones_send_task_publishes(broker: Connection) -> None:
    # given one welcome email sent the usual way and one in bulk
    single = producer.enqueue_welcome_email("ada@example.com", "Ada")
    [bulk] = producer.enqueue_many(
        contracts.SEND_WELCOME_EMAIL, [{"user_email": "ada@example.com", "user_name": "Ada"}]
    )

    # when a consumer takes both off the queue
    with broker.channel() as channel:
        first, second = (
            channel.basic_get(names.EMAIL, no_ack=True),
            channel.basic_get(names.EMAIL, no_ack=True),
        )

    # then they differ only in their ids and send time
    assert (first.headers["id"], second.headers["id"]) == (single.id, bulk.id)
    assert first.body == second.body
    assert first.delivery_info["routing_key"] == second.delivery_info["routing_key"]

    def comparable(message: Any) -> dict[str, Any]:
        properties = {**message.properties, **message.headers}
        for key in ("application_headers", "correlation_id", "id", "root_id", "sent_at"):
            properties.pop(key)
        # A process that imported the task module sends its own limits; workers apply them anyway.
        properties.update(timelimit=[None, None], ignore_result=bool(properties["ignore_result"]))
        return properties

    assert comparable(first) == comparable(second)
    assert (second.properties["delivery_mode"], second.properties["content_type"]) == (2, "application/json")
    assert isinstance(second.headers["sent_at"], float)


@pytest.fixture(scope="module")
def booking_worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker("booking")


def test_bulk_tasks_run_on_a_real_booking_worker(booking_worker: WorkerProcess, database: Any) -> None:
    # given 25 pending payments
    with database.begin() as db:
        payment_ids = [
            int(
                db.execute(text("INSERT INTO payments (amount_cents) VALUES (100) RETURNING id")).scalar_one()
            )
            for _ in range(25)
        ]

    # when their processing is published in bulk
    calls = [{"payment_id": payment_id} for payment_id in payment_ids]
    results = producer.enqueue_many(contracts.PROCESS_PAYMENT, calls, model=contracts.ProcessPaymentArgs)

    # then the worker runs each one and stores its result
    assert [result.get(timeout=60) for result in results] == [f"Payment {p} processed" for p in payment_ids]
    assert {result.status for result in results} == {states.SUCCESS}
    with database.connect() as db:
        statuses = db.execute(text("SELECT DISTINCT status FROM payments")).scalars().all()
    assert statuses == ["processed"]


def test_an_invalid_call_publishes_nothing(broker: Connection) -> None:
    # given ten calls whose fourth (index 3) has a malformed email address
    calls = welcome_calls(10)
    calls[3]["user_email"] = "not-an-address"

    # when they are published in bulk (checked with the task's own model, none named)
    # then the bad call is named and nothing reaches the broker
    with pytest.raises(contracts.InvalidTaskArguments, match=r"^call #3: .*user_email"):
        producer.enqueue_many(contracts.SEND_WELCOME_EMAIL, calls)
    assert queue_depth(broker, names.EMAIL)[0] == 0


def test_a_group_publishes_each_member_with_the_group_id_and_its_place(broker: Connection) -> None:
    # when three welcome emails are published in bulk as one group
    results = producer.enqueue_many(contracts.SEND_WELCOME_EMAIL, welcome_calls(3), group_id="welcome-batch")

    # then each message carries the group and its index, as group(...).apply_async() sends them
    with broker.channel() as channel:
        messages = [channel.basic_get(names.EMAIL, no_ack=True) for _ in results]
    assert [(m.headers["id"], m.headers["group"], m.headers["group_index"]) for m in messages] == [
        (result.id, "welcome-batch", index) for index, result in enumerate(results)
    ]


def fleet_depths(broker: Connection) -> dict[str, int]:
    return {queue.name: queue_depth(broker, queue.name)[0] for queue in TASK_QUEUES}


def test_an_unknown_task_publishes_nothing(broker: Connection) -> None:
    with pytest.raises(QueueNotFound, match="no route"):
        producer.enqueue_many("app.tasks.email_tasks_typo.send_welcome_email", welcome_calls(3))
    assert fleet_depths(broker) == {"email": 0, "bulk": 0, "booking": 0, "maintenance": 0}


def test_a_route_to_an_undeclared_queue_publishes_nothing(
    broker: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(routes.PREFIXES, "app.tasks.ghost.", "ghost")
    with pytest.raises(QueueNotFound, match="ghost"):
        producer.enqueue_many("app.tasks.ghost.haunt", [{}, {}])
    assert fleet_depths(broker) == {"email": 0, "bulk": 0, "booking": 0, "maintenance": 0}


def test_an_unreachable_broker_names_every_task_as_not_published(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a producer whose broker refuses connections
    monkeypatch.setitem(celery_app.conf, "broker_write_url", "amqp://guest:guest@127.0.0.1:1/magnetiq_test")

    # when it publishes in bulk, then it learns that none of the tasks were published
    with pytest.raises(producer.PublishError, match=r"publishing failed: .*Connection") as raised:
        producer.enqueue_many(contracts.SEND_WELCOME_EMAIL, welcome_calls(3), timeout=5)
    assert sorted(raised.value.unconfirmed) == [0, 1, 2]
    assert raised.value.confirmed == {}
    assert str(raised.value).count("not published: #0 ") == 1


class CuttingProxy:
    """A TCP proxy to the broker that drops the connection once the client has sent ``limit`` bytes."""

    def __init__(self, upstream: tuple[str, int], limit: int) -> None:
        self.upstream, self.limit, self.sent = upstream, limit, 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with suppress(OSError):
            client, _ = self.server.accept()
            broker = socket.create_connection(self.upstream, timeout=10)
            threading.Thread(target=self._pump, args=(broker, client, False), daemon=True).start()
            self._pump(client, broker, True)

    def _pump(self, source: socket.socket, target: socket.socket, counted: bool) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                self.sent += len(data) if counted else 0
                if self.sent > self.limit:
                    break
                target.sendall(data)
        for sock in (source, target):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.server.close()


def test_a_dropped_connection_names_every_unconfirmed_task(
    broker: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a producer whose connection the network drops after ~1 MB (past the first window of 1,000)
    target = Connection(TEST_BROKER_URL)
    proxy = CuttingProxy((target.hostname, target.port or 5672), limit=1_000_000)
    proxied = f"amqp://{target.userid}:{target.password}@127.0.0.1:{proxy.port}/{target.virtual_host}"
    monkeypatch.setitem(celery_app.conf, "broker_write_url", proxied)

    # when 2,000 welcome emails (~1.6 MB) are published in bulk
    try:
        with pytest.raises(producer.PublishError, match="publishing failed") as raised:
            producer.enqueue_many(contracts.SEND_WELCOME_EMAIL, welcome_calls(2000), timeout=10)
    finally:
        proxy.close()
    error = raised.value

    # then every call is accounted for, every unconfirmed one is named, and the confirmed ones are queued
    assert set(error.confirmed) | set(error.unconfirmed) == set(range(2000))
    assert error.confirmed
    assert error.unconfirmed
    for index, task_id in error.unconfirmed.items():
        assert f"#{index} {task_id}" in str(error)
    assert set(error.confirmed.values()) <= set(drain_ids(broker, names.EMAIL))


@pytest.fixture
def overflow_queue(broker: Connection) -> Iterator[Queue]:
    """A private queue beside ``email`` that takes 5 welcome emails, then refuses (reject-publish).

    The broker nacks a publish when any queue it routes to refuses it, so this
    makes every welcome email past the fifth a nack. A classic queue counts
    exactly; a quorum queue's limit lags (in RabbitMQ 3.10 a purged one let 40
    through a limit of 5). Exclusive: it disappears with the connection anyway.
    """
    queue = Queue(
        "test.bulk-publish.overflow",
        TASKS,
        routing_key="email.send_welcome_email",
        exclusive=True,
        queue_arguments={"x-max-length": 5, "x-overflow": "reject-publish"},
    )
    with broker.channel() as channel:
        queue.bind(channel).declare()
    yield queue
    with broker.channel() as channel:
        queue.bind(channel).delete()


def test_nacked_publishes_name_exactly_the_unconfirmed_tasks(
    broker: Connection, overflow_queue: Queue
) -> None:
    # given a queue on the welcome emails' route that refuses any beyond 5
    # when 40 welcome emails are published in bulk
    with pytest.raises(producer.PublishError, match="nacked by the broker") as raised:
        producer.enqueue_many(contracts.SEND_WELCOME_EMAIL, welcome_calls(40))
    error = raised.value

    # then the first 5 are confirmed and every other call is named, with its index, as unconfirmed
    assert sorted(error.confirmed) == [0, 1, 2, 3, 4]
    assert sorted(error.unconfirmed) == list(range(5, 40))
    for index, task_id in error.unconfirmed.items():
        assert f"#{index} {task_id}" in str(error)
    assert "the broker refused" in error.reason

    # and the confirmed ones are exactly those the full queue holds
    assert drain_ids(broker, overflow_queue.name) == list(error.confirmed.values())
