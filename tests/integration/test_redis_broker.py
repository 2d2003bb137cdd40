"""The fleet on a Redis broker: kombu's Redis transport, except that nothing rejected is dropped."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.utils.json import loads

from routing import TASK_QUEUES, declare_topology, names
from routing.redis_transport import DELIVERY_COUNT, Transport, Unroutable
from routing.topology import DELIVERY_LIMITS
from tests.support.environment import TEST_REDIS_BROKER_URL


@pytest.fixture
def connection(redis_db: redis.Redis) -> Iterator[Connection]:
    """A kombu connection through the fleet's Redis transport, with the topology declared (Redis emptied)."""
    redis_db.flushdb()
    with Connection(TEST_REDIS_BROKER_URL, transport=Transport) as conn:
        declare_topology(conn)
        yield conn


def _publish_and_deliver(connection: Connection, queue_name: str, task: str, **options: Any) -> Any:
    """Publish one message to ``queue_name`` through the tasks exchange; consume it, unacked."""
    with Producer(connection) as producer:
        producer.publish(
            {"task": task},
            exchange=Exchange(names.TASKS_EXCHANGE, type="topic"),
            routing_key=names.routing_key(queue_name, task),
            **options,
        )
    return _deliver_one(connection, next(q for q in TASK_QUEUES if q.name == queue_name))


def _deliver_one(connection: Connection, queue: Queue) -> Any:
    """Consume one message from ``queue`` without acking it."""
    got: list[Any] = []
    with Consumer(connection, [queue], callbacks=[lambda _body, message: got.append(message)]):
        connection.drain_events(timeout=5)
    (message,) = got
    return message


def test_a_rejected_message_moves_to_its_dead_letter_list_with_rabbitmqs_headers(
    connection: Connection, redis_db: redis.Redis
) -> None:
    # given a task message published to the tasks exchange and delivered to a consumer
    message = _publish_and_deliver(
        connection,
        names.BOOKING,
        "process_payment",
        headers={"task": "app.tasks.booking_tasks.process_payment"},
    )

    # when the consumer rejects it without requeue (a failed task, an undecodable body)
    message.reject(requeue=False)

    # then it is in booking.dlq, once, with x-death as RabbitMQ writes it, and nowhere else
    assert redis_db.llen(names.BOOKING) == 0
    assert redis_db.hlen("unacked") == 0
    (stored,) = redis_db.lrange(names.dlq(names.BOOKING), 0, -1)
    dead = loads(stored)
    assert loads(base64.b64decode(dead["body"])) == {"task": "process_payment"}  # the body as published
    (death,) = dead["headers"]["x-death"]
    assert death["reason"] == "rejected"
    assert death["queue"] == names.BOOKING
    assert death["routing-keys"] == ["booking.process_payment"]
    assert dead["headers"]["x-first-death-reason"] == "rejected"
    assert dead["headers"]["task"] == "app.tasks.booking_tasks.process_payment"


def test_a_message_requeued_goes_back_to_its_queue_not_to_the_dead_letters(
    connection: Connection, redis_db: redis.Redis
) -> None:
    # given a delivered message
    message = _publish_and_deliver(connection, names.EMAIL, "send_welcome_email")

    # when it is rejected with requeue, then it is back in its queue and the DLQ is empty
    message.reject(requeue=True)
    assert redis_db.llen(names.EMAIL) == 1
    assert redis_db.llen(names.dlq(names.EMAIL)) == 0


def test_a_task_no_queue_is_bound_for_raises_instead_of_vanishing(connection: Connection) -> None:
    # given the topology declared (by ``connection``, as a worker does) and a producer of its
    # own that declares nothing, as the fleet's producers do
    with Connection(TEST_REDIS_BROKER_URL, transport=Transport) as own, Producer(own) as producer:
        # when it publishes to the tasks exchange with a key no binding matches,
        # then it is told, as RabbitMQ's mandatory flag tells it
        with pytest.raises(Unroutable, match=r"no queue is bound for routing key 'nowhere\.task'"):
            producer.publish({"id": 3}, exchange=names.TASKS_EXCHANGE, routing_key="nowhere.task")
        # and a routable one is routed as the topic exchange it is, though never declared here
        producer.publish({"id": 4}, exchange=names.TASKS_EXCHANGE, routing_key="booking.process_payment")
    with redis.Redis.from_url(TEST_REDIS_BROKER_URL) as client:
        assert client.llen(names.BOOKING) == 1


def test_a_message_whose_deliveries_keep_failing_is_dead_lettered_past_its_queues_limit(
    connection: Connection, redis_db: redis.Redis
) -> None:
    # given a booking message (delivery limit 3, as the quorum queue's x-delivery-limit)
    booking = next(q for q in TASK_QUEUES if q.name == names.BOOKING)
    message = _publish_and_deliver(connection, names.BOOKING, "process_payment")

    # when each delivery fails and requeues it (as a worker does for a task whose process was
    # killed), the count rises by one each time, and it stays in its queue up to the limit
    for count in range(1, DELIVERY_LIMITS[names.BOOKING] + 1):
        message.reject(requeue=True)
        assert (redis_db.llen(names.BOOKING), redis_db.llen(names.dlq(names.BOOKING))) == (1, 0)
        message = _deliver_one(connection, booking)
        assert message.headers[DELIVERY_COUNT] == count

    # then the failure past the limit moves it to booking.dlq with the reason quorum queues give
    message.reject(requeue=True)
    assert (redis_db.llen(names.BOOKING), redis_db.hlen("unacked")) == (0, 0)
    (stored,) = redis_db.lrange(names.dlq(names.BOOKING), 0, -1)
    dead = loads(stored)
    assert dead["headers"]["x-death"][0]["reason"] == "delivery_limit"
    assert dead["headers"][DELIVERY_COUNT] == DELIVERY_LIMITS[names.BOOKING] + 1
    assert loads(base64.b64decode(dead["body"])) == {"task": "process_payment"}


def test_a_message_handed_back_by_a_closing_consumer_is_not_counted(redis_db: redis.Redis) -> None:
    # given a booking message prefetched by a consumer that then closes its connection, as
    # a worker does on a warm shutdown, more times than the queue's delivery limit
    redis_db.flushdb()
    booking = next(q for q in TASK_QUEUES if q.name == names.BOOKING)
    for _ in range(DELIVERY_LIMITS[names.BOOKING] + 2):
        with Connection(TEST_REDIS_BROKER_URL, transport=Transport) as conn:
            declare_topology(conn)
            if redis_db.llen(names.BOOKING) == 0:
                with Producer(conn) as producer:
                    producer.publish(
                        {"task": "p"}, exchange=names.TASKS_EXCHANGE, routing_key="booking.process_payment"
                    )
            message = _deliver_one(conn, booking)
            assert redis_db.hlen("unacked") == 1

    # then it is back in its queue each time, never counted as a failed delivery
    assert (redis_db.llen(names.BOOKING), redis_db.llen(names.dlq(names.BOOKING))) == (1, 0)
    assert redis_db.hlen("unacked") == 0
    assert DELIVERY_COUNT not in message.headers
    assert message.headers.get("redelivered") is True
