"""The shipped broker accounts (deploy/rabbitmq/definitions.json) on a private RabbitMQ node.

The definitions are imported as shipped, each user gets a password, the worker
account declares the topology. The seed's Celery calls then run as the producer
account, real workers connected as the worker account drain them, and each
account is refused what it must not do, by the broker itself (reply code and text).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from amqp.exceptions import AccessRefused, NotAllowed
from kombu import Connection

from routing import declare_topology, names
from tests.integration.producer_calls import assert_every_call_ran
from tests.support.environment import TEST_DATABASE_URL, unavailable
from tests.support.paths import ROOT
from tests.support.servers import RABBITMQ_BIN, RabbitNode
from tests.support.smtp_server import SmtpSink
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess

DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
VHOST = "magnetiq"
PRODUCER, WORKER, MONITORING = "magnetiq-producer", "magnetiq-worker", "magnetiq-monitoring"


def password(user: str) -> str:
    return f"{user}-test-secret"


def env_as(broker_url: str, **extra: str) -> dict[str, str]:
    """The environment of a fleet process of these tests connected to ``broker_url``."""
    return {**os.environ, "CELERY_BROKER_URL": broker_url, "DATABASE_URL": TEST_DATABASE_URL, **extra}


def url(node: RabbitNode, user: str) -> str:
    """The AMQP URL of the fleet's vhost on ``node`` as ``user``."""
    return node.url(VHOST, user, password(user))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """A private node: shipped definitions imported, passwords set, topology declared by the worker."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        unavailable("the broker-account tests need rabbitmq-server (Debian package rabbitmq-server)")
    rabbit = RabbitNode(tmp_path_factory.mktemp("accounts") / "rabbitmq", name="accounts")
    try:
        rabbit.start()
        rabbit.ctl("import_definitions", str(DEFINITIONS))
        for user in (PRODUCER, WORKER, MONITORING):
            rabbit.ctl("change_password", user, password(user))
        with Connection(url(rabbit, WORKER), connect_timeout=5) as worker:
            declare_topology(worker)  # the worker's rights are enough to set the vhost up
        yield rabbit
    finally:
        rabbit.stop()


@pytest.fixture(scope="module")
def workers(
    node: RabbitNode,
    database: Any,
    payment_provider: tuple[str, Any],
    smtp_sink: SmtpSink,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[WorkerProcess]]:
    """An email and a booking worker (``celery.chord_unlock``), both connected as the worker account."""
    started = []
    try:
        for role in ("email", "booking"):
            env = env_as(
                url(node, WORKER),
                SMTP_HOST="127.0.0.1",
                SMTP_PORT=str(smtp_sink.port),
                PAYMENT_PROVIDER_URL=payment_provider[0],
            )
            log = tmp_path_factory.mktemp(f"accounts-{role}") / "worker.log"
            worker = WorkerProcess(role, log, env, ["--concurrency", "2"])
            started.append(worker)
            wait_until(lambda w=worker: consuming(node, w), 60, f"{role} worker to consume", interval=0.2)
        yield started
    finally:
        for worker in started:
            worker.stop()


def consuming(node: RabbitNode, worker: WorkerProcess) -> bool:
    if worker.proc.poll() is not None:
        raise AssertionError(f"{worker.role} worker exited early:\n{worker.log()}")
    with Connection(url(node, MONITORING)) as connection, connection.channel() as channel:
        consumers = channel.queue_declare(worker.role, passive=True)[2]
    return consumers >= 1 and "ready." in worker.log()


def python(broker_url: str, *args: str) -> str:
    """Run ``python <args>`` from the project root connected to ``broker_url``; return what it printed."""
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env_as(broker_url), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def run_producer_calls(node: RabbitNode) -> dict[str, Any]:
    """Run ``tests.integration.producer_calls`` in its own process, connected as the producer account."""
    published: dict[str, Any] = json.loads(
        python(url(node, PRODUCER), "-m", "tests.integration.producer_calls")
    )
    return published


def refused(code: int, text: str) -> Callable[[BaseException], None]:
    """A check that an exception is the broker's own refusal: its reply code and text."""

    def check(exc: BaseException) -> None:
        assert isinstance(exc, AccessRefused | NotAllowed), repr(exc)
        assert exc.reply_code == code, repr(exc)
        assert text in str(exc.reply_text), repr(exc)

    return check


# -- the producer account -------------------------------------------------------


def test_the_seed_calls_run_as_the_producer_and_drain_as_the_worker(
    node: RabbitNode, workers: list[WorkerProcess], sink: SmtpSink
) -> None:
    # given workers connected as the worker account
    # when the seed's calls (.delay, countdown, eta, send_task, chain, group, chord) and the
    # producer helpers (with countdown and eta, and enqueue_many, plain and as a group) run
    # connected as the producer account
    published = run_producer_calls(node)

    # then the broker took every one, the workers ran every task (a delayed one no
    # earlier than asked), and each email was sent
    assert_every_call_ran(published, sink)


@pytest.mark.parametrize(
    ("operation", "text"),
    [
        (lambda ch: ch.basic_get(names.BOOKING, no_ack=True), "access to queue 'booking'"),
        (lambda ch: ch.basic_get(names.dlq(names.EMAIL), no_ack=True), "access to queue 'email.dlq'"),
        (lambda ch: ch.queue_purge(names.BOOKING), "access to queue 'booking'"),
        (lambda ch: ch.queue_delete(names.BOOKING), "access to queue 'booking'"),
        (lambda ch: ch.queue_declare("stolen", durable=True), "access to queue 'stolen'"),
        (lambda ch: ch.exchange_declare(names.TASKS_EXCHANGE, "topic"), "exchange 'magnetiq.tasks'"),
        (lambda ch: ch.exchange_declare(names.EVENTS_EXCHANGE, "topic"), "exchange 'celeryev'"),
        (lambda ch: ch.queue_bind(names.BOOKING, names.TASKS_EXCHANGE, "#"), "access to queue 'booking'"),
    ],
    ids=["consume", "consume-dlq", "purge", "delete", "declare-queue", "declare-exchange",
         "declare-event-exchange", "bind"],
)  # fmt: skip
def test_the_producer_cannot_consume_purge_or_declare(
    node: RabbitNode, operation: Callable[[Any], Any], text: str
) -> None:
    # given a channel as the producer account
    with (
        Connection(url(node, PRODUCER)) as connection,
        connection.channel() as channel,
        # when it tries to read or change the topology
        pytest.raises(AccessRefused) as caught,
    ):
        operation(channel)
    # then the broker refuses it (403) and names what was refused
    refused(403, text)(caught.value)
    assert "for user 'magnetiq-producer'" in caught.value.reply_text


@pytest.mark.parametrize(
    ("exchange", "routing_key", "text"),
    [
        ("amq.direct", names.BOOKING, "access to exchange 'amq.direct'"),
        ("amq.topic", names.BOOKING, "access to exchange 'amq.topic'"),
        ("celery.pidbox", "", "access to exchange 'celery.pidbox'"),
        ("", names.BOOKING, "access to exchange 'amq.default'"),
        (names.DLX_EXCHANGE, names.dlq(names.BOOKING), "access to exchange 'magnetiq.dlx'"),
        (names.TASKS_EXCHANGE, "#", "access to topic '#' in exchange 'magnetiq.tasks'"),
        (names.TASKS_EXCHANGE, "booking.x.email", "access to topic 'booking.x.email'"),
        (names.DELAYED_EXCHANGE, "1.email.#", "access to topic '1.email.#'"),
        (names.EVENTS_EXCHANGE, "worker.online", "access to topic 'worker.online'"),
    ],
)
def test_the_producer_publishes_nowhere_else(
    node: RabbitNode, exchange: str, routing_key: str, text: str
) -> None:
    # given a channel as the producer account
    with Connection(url(node, PRODUCER)) as connection:
        channel: Any = connection.channel()
        # when it publishes to another exchange, or with a routing key outside its topics
        with pytest.raises(AccessRefused) as caught:
            channel.basic_publish_confirm(
                channel.prepare_message(b"{}"), exchange=exchange, routing_key=routing_key
            )
    # then the broker refuses it
    refused(403, text)(caught.value)


def test_beat_publishes_its_schedule_as_the_producer_account(
    node: RabbitNode, database: Any, tmp_path: Path
) -> None:
    # given beat connected as the producer account, on a schedule that fires every second
    env = env_as(
        url(node, PRODUCER),
        MAINTENANCE_SCHEDULE="tests.integration.beat_schedules:EVERY_SECOND",
        BEAT_SCHEDULE_FILE=str(tmp_path / "beat.state"),
    )
    beat = WorkerProcess("beat", tmp_path / "beat.log", env, [])
    try:
        # when it leads and a slot comes due
        # then its task reaches the maintenance queue
        wait_until(lambda: depth(node, names.MAINTENANCE) >= 1, 60, "beat to publish a scheduled task")
    finally:
        beat.stop()
    assert "ACCESS_REFUSED" not in beat.log()


def depth(node: RabbitNode, queue: str) -> int:
    """Ready messages in ``queue``, read as KEDA does (a passive declare as the monitoring account)."""
    with Connection(url(node, MONITORING)) as connection, connection.channel() as channel:
        return int(channel.queue_declare(queue, passive=True)[1])


# -- the worker and monitoring accounts -----------------------------------------


def test_workers_answer_remote_control_through_the_worker_account(
    node: RabbitNode, workers: list[WorkerProcess]
) -> None:
    # given the running workers
    # when ops ping them as the worker account (pidbox exchange, reply queue), as `celery inspect` does
    worker = url(node, WORKER)
    printed = python(worker, "-m", "celery", "-A", "app.celery_app", "-b", worker, "inspect", "ping")
    # then each worker answers
    assert "email@" in printed and "booking@" in printed
    assert "2 nodes online" in printed


def test_the_worker_cannot_declare_outside_the_fleet_names(node: RabbitNode) -> None:
    with (
        Connection(url(node, WORKER)) as connection,
        connection.channel() as channel,
        pytest.raises(AccessRefused) as caught,
    ):
        channel.queue_declare("stolen", durable=True)
    refused(403, "access to queue 'stolen'")(caught.value)


def test_monitoring_reads_queue_depth_and_nothing_else(node: RabbitNode) -> None:
    with Connection(url(node, MONITORING)) as connection, connection.channel() as channel:
        # a passive declare (what KEDA's AMQP scaler and the depth gauges use) is allowed
        assert channel.queue_declare(names.BOOKING, passive=True)[0] == names.BOOKING
        with pytest.raises(AccessRefused) as caught:
            channel.basic_get(names.BOOKING, no_ack=True)
    refused(403, "access to queue 'booking'")(caught.value)


# -- policies -------------------------------------------------------------------


def test_the_dead_letter_queues_get_a_delivery_limit_the_node_accepts(node: RabbitNode) -> None:
    # given the node that imported the shipped definitions (an invalid policy fails the import)
    # when the queues' policies and the policies' definitions are listed
    queues = json.loads(node.ctl("list_queues", "-p", VHOST, "name", "policy", "--formatter", "json"))
    policies = json.loads(node.ctl("list_policies", "-p", VHOST, "--formatter", "json"))
    definitions = {policy["name"]: json.loads(policy["definition"]) for policy in policies}
    applied = {row["name"]: definitions[row["policy"]] for row in queues if row["policy"]}
    # then each DLQ has a delivery limit of its own: RabbitMQ 4.x would otherwise give it
    # the default of 20 and drop a message read more often (3.x refuses -1, "unlimited")
    for queue in names.WORK_QUEUES:
        assert applied[names.dlq(queue)]["delivery-limit"] >= 1_000_000
        assert applied[names.dlq(queue)]["overflow"] == "reject-publish"


# -- logging in -----------------------------------------------------------------


def test_a_wrong_password_is_refused_by_the_broker(node: RabbitNode) -> None:
    connection = Connection(node.url(VHOST, PRODUCER, "guessed"), connect_timeout=5)
    with pytest.raises(AccessRefused) as caught:
        connection.connect()
    connection.release()
    refused(403, "Login was refused")(caught.value)


def test_an_account_is_refused_other_vhosts(node: RabbitNode) -> None:
    connection = Connection(node.url("", PRODUCER, password(PRODUCER)), connect_timeout=5)
    with pytest.raises(NotAllowed) as caught:
        connection.connect()
    connection.release()
    refused(530, "access to vhost '/' refused")(caught.value)
