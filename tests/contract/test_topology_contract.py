"""Contract: every work queue is a dead-lettering quorum queue with a bound DLQ."""

from __future__ import annotations

import pytest
from kombu import Queue

from routing import names
from routing.topology import DEAD_LETTER_QUEUES, DLX, TASK_QUEUES, TASKS, queue_arguments

DLQ_BINDINGS = {queue.routing_key: queue for queue in DEAD_LETTER_QUEUES}


def test_work_queues_match_the_names() -> None:
    # given the declared work queues
    # when their names are listed
    # then they are the work queues of routing.names, once each
    assert [queue.name for queue in TASK_QUEUES] == list(names.WORK_QUEUES)


@pytest.mark.parametrize("queue", TASK_QUEUES, ids=lambda q: q.name)
def test_work_queue_is_a_dead_lettering_quorum_queue(queue: Queue) -> None:
    # given a work queue
    arguments = queue.queue_arguments or {}

    # when its declared arguments are read
    limit = arguments.get("x-delivery-limit")

    # then it is a durable quorum queue that dead-letters at least once
    assert queue.durable
    assert arguments["x-queue-type"] == "quorum"
    assert arguments["x-dead-letter-exchange"] == names.DLX_EXCHANGE == "magnetiq.dlx"
    assert isinstance(limit, int)
    assert not isinstance(limit, bool)
    assert limit > 0
    assert arguments["x-dead-letter-strategy"] == "at-least-once"
    assert arguments["x-overflow"] == "reject-publish"
    assert queue_arguments(queue.name) == arguments


@pytest.mark.parametrize("queue", TASK_QUEUES, ids=lambda q: q.name)
def test_work_queue_is_bound_on_the_tasks_exchange(queue: Queue) -> None:
    # given a work queue
    # when its binding is read
    # then it takes every key under its own name from the topic tasks exchange
    assert queue.exchange == TASKS
    assert queue.exchange.type == "topic"
    assert queue.routing_key == f"{queue.name}.#"


@pytest.mark.parametrize("queue", TASK_QUEUES, ids=lambda q: q.name)
def test_dead_letter_key_reaches_its_own_dlq(queue: Queue) -> None:
    # given a work queue's dead-letter routing key
    key = (queue.queue_arguments or {})["x-dead-letter-routing-key"]

    # when the DLQ bound with that key is looked up
    dlq = DLQ_BINDINGS.get(key)

    # then it exists and is this queue's DLQ
    assert dlq is not None, f"no DLQ is bound with {key!r}"
    assert dlq.name == names.dlq(queue.name)


@pytest.mark.parametrize("dlq", DEAD_LETTER_QUEUES, ids=lambda q: q.name)
def test_dead_letter_queue_is_quorum_on_the_dlx(dlq: Queue) -> None:
    # given a dead-letter queue
    # when its declaration is read
    # then it is a durable quorum queue bound on magnetiq.dlx
    assert dlq.durable
    assert (dlq.queue_arguments or {})["x-queue-type"] == "quorum"
    assert dlq.exchange == DLX
    assert dlq.exchange.name == "magnetiq.dlx"
    assert dlq.exchange.durable


def test_every_dlq_serves_one_work_queue() -> None:
    # given the dead-letter queues
    # when they are matched to work queues
    served = sorted(queue.name.removesuffix(".dlq") for queue in DEAD_LETTER_QUEUES)

    # then there is exactly one per work queue
    assert served == sorted(queue.name for queue in TASK_QUEUES)
