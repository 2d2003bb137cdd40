"""Per-worker /metrics on real workers: prefork aggregation, gevent SMTP, queue depths, beat publishes."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.beat import ScheduleEntry, Scheduler
from celery.schedules import schedule
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from app.booking.repository import PaymentNotFound
from app.celery_app import celery_app
from app.tasks.booking_tasks import process_payment
from app.tasks.email_tasks import send_welcome_email
from routing import names, topology
from tests.support.ports import free_port
from tests.support.smtp_server import SmtpSink
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess
from workers import metrics

PAYMENT = "app.tasks.booking_tasks.process_payment"
WELCOME = "app.tasks.email_tasks.send_welcome_email"
CLEANUP = "app.tasks.maintenance.cleanup_old_sessions"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample a /metrics endpoint serves, keyed by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        body = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


def wait_for_value(port: int, expected: float, metric: str, /, **labels: str) -> Samples:
    """Scrape until a sample has the expected value (postrun runs after the result is stored)."""
    found: list[Samples] = []

    def reached() -> bool:
        found[:] = [scrape(port)]
        return value(found[0], metric, **labels) == expected

    try:
        wait_until(reached, 20, f"{metric}{labels} == {expected}", interval=0.2)
    except AssertionError:
        raise AssertionError(
            f"{metric}{labels} = {value(found[0], metric, **labels)}, expected {expected}"
        ) from None
    return found[0]


def assert_bounded(samples: Samples) -> None:
    """No label of the fleet's metrics carries an id, an address or a host: only names from the code."""
    fleet = [(name, labels) for name, labels in samples if name.startswith(("celery_", "magnetiq_"))]
    assert fleet
    for name, labels in fleet:
        for label, label_value in labels:
            assert label not in {"pid", "hostname", "task_id"}, (name, label)
            assert "@" not in label_value, (name, label, label_value)
            assert not label_value.isdigit(), (name, label, label_value)


@pytest.fixture(scope="module")
def booking_metrics(
    start_worker: Callable[..., WorkerProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, Path]]:
    port, metrics_dir = free_port(), tmp_path_factory.mktemp("metrics")
    # children recycled every 4 tasks: their counts must survive them
    start_worker(
        "booking",
        "--max-tasks-per-child",
        "4",
        METRICS_PORT=str(port),
        METRICS_HOST="127.0.0.1",
        METRICS_DIR=str(metrics_dir),
    )
    yield port, metrics_dir


@pytest.fixture(scope="module")
def email_metrics(start_worker: Callable[..., WorkerProcess], smtp_sink: SmtpSink) -> int:
    port = free_port()
    start_worker(
        "email",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp_sink.port),
        METRICS_PORT=str(port),
        METRICS_HOST="127.0.0.1",
    )
    return port


def _payments(database: Any, count: int) -> list[int]:
    with database.begin() as db:
        sql = text("INSERT INTO payments (amount_cents) VALUES (100) RETURNING id")
        return [int(db.execute(sql).scalar_one()) for _ in range(count)]


def test_prefork_counters_are_summed_across_children(
    booking_metrics: tuple[int, Path], database: Any, broker: Connection
) -> None:
    port, metrics_dir = booking_metrics
    n = 12
    # given payments, processed by the prefork booking worker (two processes per core)
    results = [process_payment.delay(payment_id) for payment_id in _payments(database, n)]
    assert all(r.get(timeout=30).startswith("Payment ") for r in results)
    # and one payment that does not exist
    with pytest.raises(PaymentNotFound):
        process_payment.delay(999_999).get(timeout=30)

    # then one scrape of the main process shows every child's work
    task = {"name": PAYMENT, "queue_name": names.BOOKING}
    samples = wait_for_value(port, n + 1, "celery_task_runtime_count", **task)
    assert value(samples, "celery_task_succeeded_total", **task) == n
    assert value(samples, "celery_task_failed_total", exception="PaymentNotFound", **task) == 1
    for counted in ("celery_task_received_total", "celery_task_started_total"):
        assert value(samples, counted, **task) == n + 1, counted
    assert value(samples, "magnetiq_task_queue_wait_seconds_count", **task) == n + 1
    assert value(samples, "celery_worker_up", worker="booking") == 1
    assert value(samples, "celery_worker_tasks_active", worker="booking") == 0
    # recycled children's files were folded into the archive when they were scraped
    assert [p.name for p in metrics_dir.glob("*/histogram_archive.db")] == ["histogram_archive.db"]
    assert_bounded(samples)


def test_queue_depths_are_read_at_scrape_time(booking_metrics: tuple[int, Path], broker: Connection) -> None:
    port, _ = booking_metrics
    # given a dead-lettered message on booking.dlq
    with pytest.raises(PaymentNotFound):
        process_payment.delay(999_998).get(timeout=30)
    samples = wait_for_value(port, 1, "magnetiq_dlq_messages", queue_name=names.dlq(names.BOOKING))
    # then every fleet queue is reported, work queues as celery_queue_length
    for queue in names.WORK_QUEUES:
        assert value(samples, "celery_queue_length", queue_name=queue) is not None, queue
        assert value(samples, "magnetiq_dlq_messages", queue_name=names.dlq(queue)) is not None, queue
    consumers = value(samples, "magnetiq_queue_consumers", queue_name=names.BOOKING)
    assert consumers is not None
    assert consumers >= 1
    assert value(samples, "celery_queue_length", queue_name=names.dlq(names.BOOKING)) is None


def test_gevent_worker_counts_smtp_sends(email_metrics: int, sink: SmtpSink) -> None:
    # given three welcome emails through the gevent worker
    results = [send_welcome_email.delay(f"user{i}@example.com", f"User {i}") for i in range(3)]
    assert all(r.get(timeout=30).startswith("Welcome email sent") for r in results)
    sink.wait_for(3)
    # then the SMTP histogram and counter saw three good sends
    task = {"name": WELCOME, "queue_name": names.EMAIL}
    samples = wait_for_value(email_metrics, 3, "celery_task_succeeded_total", **task)
    assert value(samples, "magnetiq_smtp_sends_total", result="ok") == 3
    assert value(samples, "magnetiq_smtp_send_seconds_count", result="ok") == 3
    assert value(samples, "celery_worker_up", worker="email") == 1
    assert value(samples, "process_resident_memory_bytes") is not None  # one process: the plain registry
    assert_bounded(samples)


@pytest.fixture
def counting() -> Iterator[None]:
    """This process counts its publishes, as a worker or beat does with METRICS_PORT set."""
    metrics.connect_handlers()
    yield
    metrics.disconnect_handlers()


def test_beat_publishes_are_stamped_counted_and_carry_sent_at(counting: None, broker: Connection) -> None:
    # given beat's own publish path (its Scheduler) on the real broker
    scheduler = Scheduler(app=celery_app, lazy=True)
    entry = ScheduleEntry(
        name="cleanup-old-sessions", task=CLEANUP, schedule=schedule(timedelta(days=1)), app=celery_app
    )
    labels = {"name": CLEANUP, "queue_name": names.MAINTENANCE}
    before = metrics.TASK_SENT.labels(*labels.values())._value.get()

    # when it sends a periodic task
    scheduler.apply_async(entry, advance=False)

    # then the publish is counted, the beat gauge stamped, and the message carries sent_at
    assert metrics.TASK_SENT.labels(*labels.values())._value.get() - before == 1
    assert metrics.BEAT_LAST_RUN.labels(CLEANUP)._value.get() > 0
    with broker.SimpleQueue(topology.MAINTENANCE, no_ack=True) as queue:
        message = queue.get(timeout=10)
    assert message.headers["task"] == CLEANUP
    assert isinstance(message.headers["sent_at"], float)
