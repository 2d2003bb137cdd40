"""Least-privilege RabbitMQ users from deploy/rabbitmq/definitions.json, imported into a real node."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from amqp.exceptions import AccessRefused, NotAllowed
from kombu import Connection, Exchange, Queue

from app import contracts
from app.producer import send
from routing import declare_topology, names
from tests.chaos.harness import ROOT
from tests.chaos.services import PostgresCluster, RabbitNode

DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
VHOST = "magnetiq"
USERS = ("magnetiq-producer", "magnetiq-worker", "magnetiq-monitoring")


@pytest.fixture(scope="module")
def node(services: tuple[RabbitNode, PostgresCluster]) -> Iterator[RabbitNode]:
    """The private node with the definitions imported, a password set for each user, topology declared."""
    rabbit, _ = services
    rabbit.ctl("import_definitions", str(DEFINITIONS))
    for user in USERS:
        rabbit.ctl("change_password", user, f"{user}-secret")
    with Connection(url(rabbit, "magnetiq-worker"), connect_timeout=5) as worker:
        declare_topology(worker)  # the worker's rights are enough to set the vhost up
    yield rabbit


def url(rabbit: RabbitNode, user: str) -> str:
    return rabbit.url(VHOST, user, f"{user}-secret")


def test_the_definitions_name_every_fleet_user_and_policy() -> None:
    definitions = json.loads(DEFINITIONS.read_text())
    assert {u["name"] for u in definitions["users"]} == set(USERS)
    assert all(u["password_hash"] == "" for u in definitions["users"])  # no secret in the repository
    assert {p["name"] for p in definitions["policies"]} == {"dead-letter-queues", "work-queues"}


def test_the_producer_publishes_tasks_with_confirms(node: RabbitNode) -> None:
    with (
        Connection(url(node, "magnetiq-producer"), connect_timeout=5) as connection,
        connection.Producer() as p,
    ):
        send(contracts.PROCESS_PAYMENT, {"payment_id": 1}, task_id="least-privilege-1", producer=p)
    with Connection(url(node, "magnetiq-worker")) as worker, worker.channel() as channel:
        message = channel.basic_get(names.BOOKING, no_ack=True)
    assert message is not None and message.headers["id"] == "least-privilege-1"


@pytest.mark.parametrize("queue", [names.BOOKING, names.dlq(names.EMAIL)])
def test_the_producer_cannot_consume(node: RabbitNode, queue: str) -> None:
    connection = Connection(url(node, "magnetiq-producer"))
    with connection, connection.channel() as channel, pytest.raises(AccessRefused, match="access to queue"):
        channel.basic_get(queue, no_ack=True)


@pytest.mark.parametrize("exchange", ["amq.direct", "amq.topic", "celery.pidbox", "", names.DLX_EXCHANGE])
def test_the_producer_cannot_publish_elsewhere(node: RabbitNode, exchange: str) -> None:
    with Connection(url(node, "magnetiq-producer")) as connection:
        channel = connection.channel()
        with pytest.raises(AccessRefused, match="access to exchange"):
            channel.basic_publish_confirm(
                channel.prepare_message(b"{}"), exchange=exchange, routing_key=names.BOOKING
            )


def test_the_producer_cannot_use_a_foreign_routing_key(node: RabbitNode) -> None:
    with Connection(url(node, "magnetiq-producer")) as connection:
        channel = connection.channel()
        with pytest.raises(AccessRefused, match="ACCESS_REFUSED"):
            channel.basic_publish_confirm(
                channel.prepare_message(b"{}"), exchange=names.TASKS_EXCHANGE, routing_key="#"
            )


def test_the_producer_cannot_declare_or_bind(node: RabbitNode) -> None:
    with Connection(url(node, "magnetiq-producer")) as connection, connection.channel() as channel:
        queue = Queue("stolen", Exchange(names.TASKS_EXCHANGE, type="topic"), routing_key="booking.#")
        with pytest.raises(AccessRefused, match="ACCESS_REFUSED"):
            queue.bind(channel).declare()


def test_the_monitoring_user_cannot_read_task_queues(node: RabbitNode) -> None:
    with Connection(url(node, "magnetiq-monitoring")) as connection, connection.channel() as channel:
        assert channel.queue_declare(names.BOOKING, passive=True)[0] == names.BOOKING  # depth is visible
        with pytest.raises(AccessRefused):
            channel.basic_get(names.BOOKING, no_ack=True)


def test_a_wrong_password_is_refused(node: RabbitNode) -> None:
    connection = Connection(node.url(VHOST, "magnetiq-producer", "guessed"), connect_timeout=5)
    with pytest.raises((AccessRefused, NotAllowed, ConnectionRefusedError, OSError)):
        connection.ensure_connection(max_retries=0)
    connection.release()
