"""Reading a DLQ leaves every message in place, in order, with its headers, for both readers.

The maintenance job (``report-dead-letters``) and ``magnetiq dlq list`` read
through one reader. Each talks to the real broker through a relay that
records the AMQP methods it sends, so the test sees that messages go back with
``basic.nack`` and never ``basic.reject`` (which RabbitMQ 4.3+ counts against
a delivery limit; 3.x treats the two alike, so only the wire tells them apart).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from kombu import Connection, Exchange, Producer

from app.celery_app import celery_app
from app.contracts import REPORT_DEAD_LETTERS
from routing import names
from tests.support.broker import queue_depth
from tests.support.cli import magnetiq
from tests.support.environment import TEST_BROKER_URL
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess

#: AMQP 0-9-1 class and method ids (``amqp.spec``) of the methods the test looks for.
BASIC_REJECT = (60, 90)
BASIC_NACK = (60, 120)
DLQ = names.dlq(names.BOOKING)
#: Headers a requeue may change (quorum queues count every delivery); all others must stay.
COUNTERS = ("x-delivery-count",)


class MethodRecorder:
    """A TCP relay to the broker that records each AMQP method frame a client sends (class, method)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.methods: list[tuple[int, int]] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        """Relay one connection both ways; close both sockets once both directions ended."""
        with client, socket.create_connection(self.upstream) as server:
            back = threading.Thread(target=self._pump, args=(server, client, False), daemon=True)
            back.start()
            self._pump(client, server, True)
            back.join()

    def _pump(self, source: socket.socket, target: socket.socket, record: bool) -> None:
        pending = b""
        while chunk := _recv(source):
            if record:
                pending = self._frames(pending + chunk)
            try:
                target.sendall(chunk)
            except OSError:
                break
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def _frames(self, data: bytes) -> bytes:
        """Record every complete method frame in ``data``; return the incomplete rest."""
        if data.startswith(b"AMQP"):
            data = data[8:]  # the protocol header
        while len(data) >= 7:
            kind, _, size = struct.unpack(">BHI", data[:7])
            if len(data) < 7 + size + 1:
                break
            if kind == 1:
                self.methods.append(struct.unpack(">HH", data[7:11]))
            data = data[7 + size + 1 :]
        return data

    def url(self) -> str:
        """The tests' broker URL, through this relay."""
        parts = urlsplit(TEST_BROKER_URL)
        netloc = f"{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def count(self, method: tuple[int, int]) -> int:
        """How often clients sent ``method``."""
        return self.methods.count(method)

    def close(self) -> None:
        """Stop accepting (relayed connections end with their clients)."""
        self._server.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


@pytest.fixture
def recorder() -> Iterator[MethodRecorder]:
    parts = urlsplit(TEST_BROKER_URL)
    relay = MethodRecorder((parts.hostname or "127.0.0.1", parts.port or 5672))
    yield relay
    relay.close()


def dead_letter(broker: Connection, count: int) -> list[dict[str, Any]]:
    """Dead-letter ``count`` real booking messages (rejected, so the broker adds x-death); their headers."""
    with broker.channel() as channel:
        producer = Producer(channel, Exchange(names.TASKS_EXCHANGE, type="topic", passive=True))
        for n in range(count):
            producer.publish(
                {"n": n}, routing_key="booking.dead", headers={"id": f"dead-{n}"}, serializer="json"
            )
        for _ in range(count):
            message = wait_until(
                lambda: channel.basic_get(names.BOOKING, no_ack=False), 30, "a booking message"
            )
            channel.basic_reject(message.delivery_tag, requeue=False)
    wait_until(lambda: queue_depth(broker, DLQ)[0] == count, 30, f"{count} dead letters in {DLQ}")
    with broker.channel() as channel:  # read unacked: closing the channel gives them all back
        return [headers(channel.basic_get(DLQ, no_ack=False)) for _ in range(count)]


def headers(message: Any) -> dict[str, Any]:
    """A message's headers, without the counters a requeue may change."""
    return {key: value for key, value in message.headers.items() if key not in COUNTERS}


def assert_in_place(broker: Connection, before: list[dict[str, Any]]) -> None:
    """Every message is still there, in the same order, with the same headers (x-death included)."""
    assert queue_depth(broker, DLQ)[0] == len(before)
    with broker.channel() as channel:  # consumed for good now: the queue's own order
        taken = [channel.basic_get(DLQ, no_ack=True) for _ in range(len(before) + 1)]
    assert taken[-1] is None
    after = [headers(message) for message in taken[:-1]]
    assert [h["id"] for h in after] == [f"dead-{n}" for n in range(len(before))]
    assert after == before
    assert all(h["x-death"][0]["reason"] == "rejected" for h in after)


def test_dlq_list_leaves_every_message_in_place(broker: Connection, recorder: MethodRecorder) -> None:
    # given three dead letters (read once already, so the broker holds them as returned messages)
    before = dead_letter(broker, 3)

    # when the CLI lists the whole DLQ, then only its head, twice
    for limit in ("100", "1", "1"):
        done = magnetiq("dlq", "list", "booking", "--limit", limit, CELERY_BROKER_URL=recorder.url())
        assert done.returncode == 0, done.stderr
        assert f"{min(int(limit), 3)} message(s) read from booking.dlq, all left in place" in done.stdout
    assert [line.split()[0] for line in done.stdout.splitlines()[1:-1]] == ["dead-0"]

    # then each read gave every message back with nack, never reject, and nothing moved
    assert (recorder.count(BASIC_NACK), recorder.count(BASIC_REJECT)) == (9, 0)
    assert_in_place(broker, before)


def test_the_dead_letter_report_leaves_every_message_in_place(
    broker: Connection, recorder: MethodRecorder, start_worker: Callable[..., WorkerProcess]
) -> None:
    # given three dead letters (read once already), and a maintenance worker talking to the
    # broker through the recorder
    before = dead_letter(broker, 3)
    start_worker("maintenance", CELERY_BROKER_URL=recorder.url())

    # when the report job runs, twice
    reports = [celery_app.send_task(REPORT_DEAD_LETTERS).get(timeout=30) for _ in range(2)]

    # then it saw the three, gave them back with nack each time, never reject, and nothing moved
    assert [{r["queue"]: r["messages"] for r in report}[DLQ] for report in reports] == [3, 3]
    assert (recorder.count(BASIC_NACK), recorder.count(BASIC_REJECT)) == (6, 0)
    assert_in_place(broker, before)
