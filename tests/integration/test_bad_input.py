"""Hostile and broken messages on a real prefork worker: none crashes it, none is silently dropped."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from app import contracts, producer
from app.contracts import MAX_MESSAGE_BYTES, MAX_PAYLOAD_BYTES, PayloadTooLarge
from routing import names
from tests.support.broker import queue_depth
from tests.support.processes import peak_rss_kib
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess

BOOKING_DLQ = names.dlq(names.BOOKING)


@pytest.fixture(scope="module")
def booking_worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker("booking", "--concurrency", "1")


class Exploit:
    """Unpickling this creates a file: proof that a pickle body was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def raw_publish(broker: Connection, body: bytes, content_type: str, headers: dict[str, Any]) -> None:
    """Publish a message as a producer that ignores the fleet's API would."""
    with broker.Producer() as raw:
        raw.publish(
            body,
            exchange=names.TASKS_EXCHANGE,
            routing_key="booking.process_payment",
            content_type=content_type,
            content_encoding="binary" if content_type.endswith("serialize") else "utf-8",
            headers={"task": contracts.PROCESS_PAYMENT, "id": "hostile-1", **headers},
        )


def dead_lettered_and_alive(broker: Connection, worker: WorkerProcess) -> None:
    """The message reached booking.dlq, and the worker still processes work."""
    wait_until(lambda: queue_depth(broker, BOOKING_DLQ)[0] == 1, 20, "booking.dlq depth 1")
    assert worker.proc.poll() is None
    with pytest.raises(Exception, match="payment 999 does not exist"):
        producer.enqueue_process_payment(999).get(timeout=30)  # a task after it still runs


def test_a_pickle_body_is_dead_lettered_never_executed(
    booking_worker: WorkerProcess, broker: Connection, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    body = pickle.dumps(((), {"payment_id": Exploit(marker)}, {}))
    raw_publish(broker, body, "application/x-python-serialize", {})
    dead_lettered_and_alive(broker, booking_worker)
    assert not marker.exists()


def test_a_non_json_body_is_dead_lettered(booking_worker: WorkerProcess, broker: Connection) -> None:
    raw_publish(broker, b"\xff\xfe not json", "application/json", {})
    dead_lettered_and_alive(broker, booking_worker)


@pytest.mark.parametrize("body", [b'"a string"', b"[[], {}]", b'{"payment_id": 1}', b"[1, 2, 3]"])
def test_a_json_body_that_is_not_args_kwargs_embed_is_dead_lettered(
    booking_worker: WorkerProcess, broker: Connection, body: bytes
) -> None:
    # Stock Celery raises out of its consumer on the first three: the worker stops, and the
    # message goes back to the queue for the next worker to stop on.
    raw_publish(broker, body, "application/json", {})
    dead_lettered_and_alive(broker, booking_worker)


def test_an_unknown_task_name_is_dead_lettered(booking_worker: WorkerProcess, broker: Connection) -> None:
    raw_publish(broker, b"[[], {}, {}]", "application/json", {"task": "app.tasks.booking_tasks.no_such_task"})
    dead_lettered_and_alive(broker, booking_worker)


def test_cr_lf_in_a_header_is_dead_lettered(booking_worker: WorkerProcess, broker: Connection) -> None:
    task = f"{contracts.PROCESS_PAYMENT}\r\nX-Injected: yes"
    raw_publish(broker, b'[[], {"payment_id": 1}, {}]', "application/json", {"task": task})
    dead_lettered_and_alive(broker, booking_worker)
    assert "X-Injected" not in booking_worker.log().replace(repr(task), "")


class NoteArgs(contracts.Arguments):
    """A model with a free-form field: the fleet's own models bound every string far below the cap."""

    note: str


def test_the_producer_refuses_a_payload_over_the_cap(broker: Connection) -> None:
    huge = {"note": "x" * MAX_PAYLOAD_BYTES}
    with pytest.raises(PayloadTooLarge, match=f"exceed the {MAX_PAYLOAD_BYTES}-byte cap"):
        producer.publish(contracts.PROCESS_PAYMENT, NoteArgs, huge)
    with pytest.raises(PayloadTooLarge, match="call #1"):
        producer.enqueue_many(contracts.PROCESS_PAYMENT, [{"note": "ok"}, huge], model=NoteArgs)
    assert queue_depth(broker, names.BOOKING)[0] == 0  # nothing was published


def test_the_worker_refuses_an_oversized_body_undecoded(
    booking_worker: WorkerProcess, broker: Connection
) -> None:
    pid = booking_worker.proc.pid
    before = peak_rss_kib(pid)[pid]
    body = b'[[], {"payment_id": "' + b"9" * (4 * MAX_MESSAGE_BYTES) + b'"}, {}]'  # ~3 MiB of one string
    raw_publish(broker, body, "application/json", {})
    dead_lettered_and_alive(broker, booking_worker)
    assert "rejected oversized message" in booking_worker.log()
    # Receiving the frame costs its size once; decoding it would cost many times that.
    assert peak_rss_kib(pid)[pid] - before < 3 * len(body) // 1024
