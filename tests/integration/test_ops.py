"""magnetiq status, dlq and publish against the real broker: counts, peeks that lose nothing, replays."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner, Result
from kombu import Connection

from app import producer
from app.celery_app import celery_app
from app.settings import get_settings
from routing import declare_topology, names
from tests.support.broker import queue_depth
from tests.support.ports import free_port
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess
from workers.cli import main
from workers.cli.dead_letters import REPLAYS_HEADER

BOOKING_DLQ = names.dlq(names.BOOKING)


def magnetiq(*args: str, code: int = 0, stdin: str | None = None) -> Result:
    """Run the command line in this process and check its exit status."""
    result = CliRunner().invoke(main, list(args), input=stdin)
    assert result.exit_code == code, result.output
    return result


@pytest.fixture
def no_management(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the management API at a port nothing listens on (as on a broker without the plugin)."""
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", url)
    get_settings.cache_clear()
    yield url
    monkeypatch.delenv("RABBITMQ_MANAGEMENT_URL")
    get_settings.cache_clear()


def dead_letter(broker: Connection, count: int) -> list[str]:
    """Publish ``count`` payments and have the broker dead-letter each (rejected without requeue).

    Returns:
        The task ids, in the order they reached the DLQ.
    """
    ids = []
    with broker.channel() as channel:
        for payment_id in range(1, count + 1):
            ids.append(producer.enqueue_process_payment(payment_id).id)
            message = channel.basic_get(names.BOOKING, no_ack=False)
            assert message.headers["id"] == ids[-1]
            channel.basic_reject(message.delivery_tag, requeue=False)
    settled(broker, count)
    return ids


def settled(broker: Connection, depth: int) -> None:
    """Wait until the booking DLQ holds ``depth`` ready messages (returns are counted asynchronously)."""
    wait_until(lambda: queue_depth(broker, BOOKING_DLQ)[0] == depth, 10, f"{BOOKING_DLQ} depth {depth}")


def rows(output: str) -> dict[str, list[str]]:
    """The rows of ``magnetiq status`` by queue name."""
    return {
        line.split()[0]: line.split()[1:]
        for line in output.splitlines()
        if line.split()[:1] in (["email"], ["bulk"], ["booking"], ["maintenance"])
    }


def listed_ids(output: str) -> list[str]:
    return [line.split()[0] for line in output.splitlines()[1:-1]]


def test_status_counts_queues_and_dlqs_without_the_management_api(
    broker: Connection, no_management: str
) -> None:
    # given three emails waiting, and two dead-lettered payments
    for n in range(3):
        producer.enqueue_welcome_email(f"user{n}@example.com", "User")
    dead_letter(broker, 2)

    # when ops ask for the status on a broker without the management API
    output = magnetiq("status").output

    # then each queue shows its ready count, consumers and DLQ depth
    table = rows(output)
    assert table["email"][:3] == ["3", "?", "0"]
    assert table["email"][3] == "0"
    assert table["booking"][:3] == ["0", "?", "0"]
    assert table["bulk"][:3] == ["0", "?", "0"]  # the reminders' lane, a row of its own
    # and the DLQ's oldest message age is read from its head
    assert table["booking"][3] == "2"
    assert table["booking"][4].endswith("s")
    assert table["maintenance"][4] == "-"
    # and the missing figures say why, naming the API asked
    assert f"management API at {no_management}" in output
    assert "unacked unknown: management API at" in output
    assert output.strip().endswith("workers online (0): none")
    # and reading the DLQ's head left it there
    settled(broker, 2)


def test_status_lists_the_workers_online(start_worker: Callable[..., WorkerProcess]) -> None:
    # given a maintenance worker consuming
    start_worker("maintenance")
    # when ops ask for the status with AMQP only
    output = magnetiq("status", "--no-management").output
    # then the worker answers by node name and its queue shows one consumer
    assert "workers online (1): maintenance@" in output
    assert "unacked unknown: management API not asked (--no-management)" in output
    assert rows(output)["maintenance"][2] == "1"


def test_dlq_list_reads_in_order_and_leaves_every_message(broker: Connection) -> None:
    # given five dead-lettered payments
    ids = dead_letter(broker, 5)
    # when the DLQ is listed twice (by its work queue's name and by its own)
    first = magnetiq("dlq", "list", "booking").output
    second = magnetiq("dlq", "list", BOOKING_DLQ).output
    # then both list every message, head first, with where and why it died
    assert listed_ids(first) == ids
    assert listed_ids(second) == ids
    assert all(" booking " in line and " rejected " in line for line in first.splitlines()[1:-1])
    assert first.splitlines()[-1] == "5 message(s) read from booking.dlq, all left in place"
    # and nothing left the DLQ (a quorum queue counts returned messages a moment later)
    settled(broker, 5)


def test_dlq_list_limit_reads_only_the_head(broker: Connection) -> None:
    ids = dead_letter(broker, 3)
    assert listed_ids(magnetiq("dlq", "list", "booking", "--limit", "2").output) == ids[:2]
    settled(broker, 3)


def test_dlq_show_prints_headers_death_and_arguments(broker: Connection) -> None:
    # given two dead-lettered payments
    _, second = dead_letter(broker, 2)
    # when the second is shown
    shown = json.loads(magnetiq("dlq", "show", "booking", second).output)
    # then its headers, the broker's death record and its arguments are there
    assert shown["headers"]["id"] == second
    assert shown["headers"]["task"] == "app.tasks.booking_tasks.process_payment"
    (death,) = shown["headers"]["x-death"]
    assert (death["queue"], death["reason"], death["count"]) == ("booking", "rejected", 1)
    assert shown["body"][1] == {"payment_id": 2}
    assert shown["properties"]["content_type"] == "application/json"
    # and an unknown id is an error
    assert "is not among the first 100 messages" in magnetiq("dlq", "show", "booking", "nope", code=1).output
    settled(broker, 2)


def test_dlq_replay_dry_run_moves_nothing(broker: Connection) -> None:
    ids = dead_letter(broker, 2)
    output = magnetiq("dlq", "replay", "booking", "--dry-run").output
    assert [line.split()[2] for line in output.splitlines()[:-1]] == ids
    assert output.splitlines()[-1] == "2 message(s) would replay from booking.dlq"
    settled(broker, 2)
    assert queue_depth(broker, names.BOOKING)[0] == 0


def test_dlq_replay_keeps_headers_and_drops_the_death_record(broker: Connection) -> None:
    # given two dead-lettered payments, and what the DLQ holds of the first
    first, second = dead_letter(broker, 2)
    with broker.channel() as channel:
        before = channel.basic_get(BOOKING_DLQ, no_ack=False)
        channel.send_method((60, 120), "Lbb", (before.delivery_tag, False, True))  # nack, requeue
    assert before.headers["id"] == first

    # when only the first is replayed
    output = magnetiq("dlq", "replay", "booking", "--task-id", first).output

    # then it is back in the booking queue and the second stays dead-lettered
    assert f"replayed {first} app.tasks.booking_tasks.process_payment -> booking" in output
    assert queue_depth(broker, names.BOOKING)[0] == 1
    settled(broker, 1)
    assert listed_ids(magnetiq("dlq", "list", "booking").output) == [second]
    with broker.channel() as channel:
        after = channel.basic_get(names.BOOKING, no_ack=True)
    # with the same body, properties and task headers, routed as the router routes it
    assert after.body == before.body
    assert after.delivery_info["routing_key"] == "booking.process_payment"
    assert after.properties["correlation_id"] == first
    kept = {k: v for k, v in before.headers.items() if not k.startswith("x-")}
    assert {k: after.headers[k] for k in kept} == kept
    # without the broker's death headers, and counted as replayed once
    assert not [k for k in after.headers if k.startswith(("x-death", "x-first-death", "x-last-death"))]
    assert after.headers[REPLAYS_HEADER] == 1


def test_dlq_purge_asks_first(broker: Connection) -> None:
    dead_letter(broker, 3)
    assert "Aborted" in magnetiq("dlq", "purge", "booking", stdin="n\n", code=1).output
    assert queue_depth(broker, BOOKING_DLQ)[0] == 3
    assert "purged 3 message(s) from booking.dlq" in magnetiq("dlq", "purge", "booking", "--yes").output
    assert queue_depth(broker, BOOKING_DLQ)[0] == 0


def test_dlq_refuses_a_queue_that_is_not_the_fleets() -> None:
    output = magnetiq("dlq", "purge", "payments", "--yes", code=2).output
    assert "'payments' is not a fleet queue" in output


def test_publish_validates_and_sends_any_task_by_name(broker: Connection) -> None:
    # when a payment is published by name with JSON arguments
    output = magnetiq(
        "publish", "app.tasks.booking_tasks.process_payment", "--kwargs", '{"payment_id": 42}'
    ).output
    # then it waits in the booking queue as a protocol-2 message with those arguments
    assert output.startswith("published app.tasks.booking_tasks.process_payment id=")
    with broker.channel() as channel:
        message = channel.basic_get(names.BOOKING, no_ack=True)
    assert message.headers["task"] == "app.tasks.booking_tasks.process_payment"
    assert json.loads(message.body)[:2] == [[], {"payment_id": 42}]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["app.tasks.booking_tasks.process_payment", "--kwargs", '{"payment_id": "x"}'], "payment_id"),
        (["app.tasks.booking_tasks.process_payment", "--kwargs", "{"], "not JSON"),
        (["app.tasks.booking_tasks.process_payment", "--args", "[1]"], "keyword arguments only"),
        (["app.tasks.nothing.here"], "no route to a fleet queue"),
    ],
)
def test_publish_refuses_what_would_fail(broker: Connection, args: list[str], error: str) -> None:
    result = CliRunner().invoke(main, ["publish", *args])
    assert result.exit_code != 0
    assert error in result.output
    assert queue_depth(broker, names.BOOKING)[0] == 0


def test_publish_of_a_task_no_queue_is_bound_for_fails_instead_of_vanishing(broker: Connection) -> None:
    # given a broker where the maintenance queue is gone (deleted by hand, never re-declared)
    with broker.channel() as channel:
        channel.queue_delete(names.MAINTENANCE)
    try:
        # when a maintenance task is published by name
        result = CliRunner().invoke(main, ["publish", "app.tasks.maintenance.expire_results"])
    finally:
        declare_topology(broker)

    # then the broker's return (mandatory) is the command's error, with what to do
    assert result.exit_code != 0
    assert "was not queued" in result.output
    assert "topology apply" in result.output


def test_dlq_replay_stops_at_a_task_without_a_route(broker: Connection) -> None:
    # given a dead-lettered message that names a task the fleet does not route
    celery_app.send_task("old.task", task_id="legacy-1")  # unrouted: the default queue, booking
    with broker.channel() as channel:
        message = channel.basic_get(names.BOOKING, no_ack=False)
        channel.basic_reject(message.delivery_tag, requeue=False)
    settled(broker, 1)
    # when the DLQ is replayed
    output = magnetiq("dlq", "replay", "booking", code=1).output
    # then the replay stops there with the reason, and the message stays dead-lettered
    assert "message legacy-1: task 'old.task' has no route; not replayed" in output
    settled(broker, 1)
    assert queue_depth(broker, names.BOOKING)[0] == 0


def test_status_says_how_to_declare_a_missing_queue(broker: Connection) -> None:
    # given a vhost whose topology lost a queue
    with broker.channel() as channel:
        channel.queue_delete(names.dlq(names.MAINTENANCE))
    try:
        # when ops ask for the status
        output = magnetiq("status", "--no-management", code=1).output
        # then one line names the missing queue and the command that declares it
        assert "maintenance.dlq" in output
        assert "run `magnetiq topology apply`" in output
    finally:
        declare_topology(broker)
