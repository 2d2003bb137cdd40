"""The topology on a real RabbitMQ vhost: types and arguments as declared."""

from __future__ import annotations

import pytest
from amqp.exceptions import PreconditionFailed
from kombu import Connection, Queue

from routing import declare_topology, names
from routing.topology import DEAD_LETTER_QUEUES, TASK_QUEUES, queue_arguments
from tests.support.broker import queue_depth
from tests.support.waiting import wait_until


def _redeclare(connection: Connection, name: str, arguments: dict[str, object]) -> None:
    with connection.channel() as channel:
        channel.queue_declare(name, durable=True, auto_delete=False, arguments=arguments)


def test_declare_is_idempotent(broker: Connection) -> None:
    first = declare_topology(broker)
    second = declare_topology(broker)
    assert first == second
    assert first[:2] == [names.TASKS_EXCHANGE, names.DLX_EXCHANGE]


@pytest.mark.parametrize("queue", [q.name for q in (*TASK_QUEUES, *DEAD_LETTER_QUEUES)])
def test_queue_exists_with_the_declared_arguments(broker: Connection, queue: str) -> None:
    # given the declared arguments, redeclaring with exactly them succeeds...
    arguments = queue_arguments(queue)
    _redeclare(broker, queue, arguments)
    assert queue_depth(broker, queue)[0] == 0
    # ...and the broker refuses a classic declaration of the same queue: it is quorum
    with pytest.raises(PreconditionFailed):
        _redeclare(broker, queue, {**arguments, "x-queue-type": "classic"})


@pytest.mark.parametrize("queue", names.WORK_QUEUES)
def test_work_queue_delivery_limit_and_dead_lettering_are_on_the_broker(
    broker: Connection, queue: str
) -> None:
    arguments = queue_arguments(queue)
    for key, other in (
        ("x-delivery-limit", int(arguments["x-delivery-limit"]) + 1),
        ("x-dead-letter-exchange", "elsewhere"),
        ("x-dead-letter-strategy", "at-most-once"),
    ):
        with pytest.raises(PreconditionFailed):
            _redeclare(broker, queue, {**arguments, key: other})


def test_dead_lettered_message_reaches_its_dlq(broker: Connection) -> None:
    # given a message on the booking queue
    with broker.Producer() as producer:
        producer.publish(
            {"probe": 1}, exchange=names.TASKS_EXCHANGE, routing_key="booking.probe", serializer="json"
        )
    # when a consumer rejects it without requeue
    with broker.channel() as channel:
        queue = Queue(names.BOOKING, channel=channel, no_declare=True)
        message = wait_until(lambda: queue.get(no_ack=False), 10, "the probe message")
        message.reject(requeue=False)
    # then it is in booking.dlq, with the reason in its x-death header
    wait_until(lambda: queue_depth(broker, names.dlq(names.BOOKING))[0] == 1, 10, "booking.dlq depth 1")
    with broker.channel() as channel:
        dead = Queue(names.dlq(names.BOOKING), channel=channel, no_declare=True).get(no_ack=True)
    assert dead is not None
    assert dead.headers["x-death"][0]["reason"] == "rejected"
    assert dead.headers["x-death"][0]["routing-keys"] == ["booking.probe"]
