"""Unit tests of workers.metrics: signal handlers, bounded labels, collectors, and the sent_at stamp."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from billiard.exceptions import TimeLimitExceeded
from celery import Celery, signals
from celery.app.trace import build_tracer
from celery.worker import state as worker_state
from celery.worker.request import Request
from kombu import Message
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.mmap_dict import MmapedDict, mmap_key

import workers.__main__ as workers_main
from app.celery_app import stamp_sent_at
from app.mail.bridge import AsyncioBridge
from app.mail.service import build_message
from app.mail.smtp import AioSmtpSender, SmtpConfig, SmtpPermanentError, SmtpTransientError
from app.settings import Settings
from app.tasks import resources
from tests.support.ports import free_port
from workers import metrics
from workers import signals as worker_signals

#: A routed task name the fleet owns (probe tasks live on a separate app, not the fleet's).
PROBE = "app.tasks.booking_tasks.metrics_probe"
FAILING = "app.tasks.booking_tasks.metrics_probe_failing"


class ProbeFailure(Exception):
    """Raised by the failing probe task."""


@pytest.fixture(scope="module")
def probe_app() -> Celery:
    app = Celery("metrics-probe", set_as_current=False)
    app.conf.update(result_backend=None, task_ignore_result=True)

    @app.task(name=PROBE)
    def probe(user_email: str) -> str:
        return "done"

    @app.task(name=FAILING)
    def failing() -> None:
        raise ProbeFailure("always")

    return app


@pytest.fixture
def handlers() -> Iterator[None]:
    """The task handlers connected for one test, as ``install`` does in a worker."""
    metrics.connect_handlers()
    metrics.bind_worker("booking")
    yield
    metrics.disconnect_handlers()
    metrics.bind_worker("")
    metrics.set_worker_up(False)


def sample(metric: str, /, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def run_traced(app: Celery, name: str, args: tuple[Any, ...] = (), **request: Any) -> None:
    """Run a task through Celery's worker tracer with a worker-shaped request dict."""
    task = app.tasks[name]
    task_id = str(uuid.uuid4())
    context = {"id": task_id, "task": name, "hostname": "booking@test", **request}
    build_tracer(name, task, app=app, eager=False)(task_id, args, {}, context)


def test_queue_label_of_a_publish_is_the_route_else_the_routing_key_word() -> None:
    assert metrics.queue_label(PROBE, "attacker.chosen") == "booking"
    assert metrics.queue_label("app.tasks.maintenance.cleanup_old_sessions", None) == "maintenance"
    assert metrics.queue_label("bench.noop", "booking.bench") == "booking"
    # native delayed delivery prefixes the key with delay bits
    assert metrics.queue_label("bench.noop", "0.0.1.0.1.email.noop") == "email"
    assert metrics.queue_label("bench.noop", "email") == "email"
    assert metrics.queue_label("bench.noop", "x.y.z") == "unknown"
    assert metrics.queue_label("bench.noop", None) == "unknown"


def test_worker_series_use_the_route_else_the_profile_queue() -> None:
    metrics.bind_worker("email")
    try:
        assert metrics.worker_series(PROBE).queue == "booking"
        assert metrics.worker_series("bench.only_on_email").queue == "email"
    finally:
        metrics.bind_worker("")
    assert metrics.worker_series("bench.only_on_nothing").queue == "unknown"


def test_task_label_keeps_known_names_only() -> None:
    paid = "app.tasks.booking_tasks.process_payment"
    assert metrics.task_label(paid) == paid
    assert metrics.task_label("celery.backend_cleanup") == "celery.backend_cleanup"
    assert metrics.task_label("user-supplied 123") == "unknown"
    assert metrics.task_label(None) == "unknown"


def test_queue_wait_is_measured_from_sent_at_or_a_later_eta() -> None:
    now = time.time()
    assert metrics.queue_wait(SimpleNamespace(sent_at=now - 2.5, eta=None), now) == pytest.approx(2.5)
    eta = datetime.fromtimestamp(now - 0.5, UTC).isoformat()
    assert metrics.queue_wait(SimpleNamespace(sent_at=now - 60, eta=eta), now) == pytest.approx(0.5)
    assert metrics.queue_wait(SimpleNamespace(sent_at=now + 3, eta=None), now) == 0.0  # clock skew
    later = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    assert metrics.queue_wait(SimpleNamespace(sent_at=now - 5, eta=later), now) == 0.0
    assert metrics.queue_wait(SimpleNamespace(eta=None), now) is None
    assert metrics.queue_wait(SimpleNamespace(sent_at="yesterday", eta=None), now) is None


def test_stamp_sent_at_sets_the_header_once() -> None:
    headers: dict[str, Any] = {"task": PROBE}
    before = time.time()
    stamp_sent_at(headers=headers)
    assert before <= headers["sent_at"] <= time.time()
    first = headers["sent_at"]
    stamp_sent_at(headers=headers)  # a retry keeps its first stamp
    assert headers["sent_at"] == first
    stamp_sent_at(headers=None)  # nothing to stamp, no error


#: What one successful task adds to: succeeded, runtime count, wait count, wait sum.
SUCCESS_SAMPLES = (
    "celery_task_succeeded_total",
    "celery_task_runtime_count",
    "magnetiq_task_queue_wait_seconds_count",
    "magnetiq_task_queue_wait_seconds_sum",
)


def test_a_successful_task_counts_succeeded_runtime_and_wait(probe_app: Celery, handlers: None) -> None:
    labels = {"name": PROBE, "queue_name": "booking"}
    before = [sample(m, **labels) for m in SUCCESS_SAMPLES]
    run_traced(
        probe_app, PROBE, ("a@b.example",), delivery_info={"routing_key": "x"}, sent_at=time.time() - 1
    )
    metrics.flush()  # what the flusher thread does every second
    succeeded, runs, waits, waited = (
        sample(m, **labels) - b for m, b in zip(SUCCESS_SAMPLES, before, strict=True)
    )
    assert (succeeded, runs, waits) == (1, 1, 1)
    assert 1.0 <= waited < 30
    assert metrics._running == {}


def test_a_failing_task_counts_its_exception_class(probe_app: Celery, handlers: None) -> None:
    labels = {"name": FAILING, "queue_name": "booking", "exception": "ProbeFailure"}
    before = sample("celery_task_failed_total", **labels)
    succeeded = sample("celery_task_succeeded_total", name=FAILING, queue_name="booking")
    run_traced(probe_app, FAILING, delivery_info={"routing_key": "booking.metrics_probe_failing"})
    metrics.flush()
    assert sample("celery_task_failed_total", **labels) - before == 1
    assert sample("celery_task_succeeded_total", name=FAILING, queue_name="booking") == succeeded


def test_a_failure_reported_by_the_parent_is_labelled_by_route(probe_app: Celery, handlers: None) -> None:
    # a hard time limit: the parent sends task_failure for a task it never ran
    labels = {"name": PROBE, "queue_name": "booking", "exception": "TimeLimitExceeded"}
    before = sample("celery_task_failed_total", **labels)
    signals.task_failure.send(sender=probe_app.tasks[PROBE], task_id="gone", exception=TimeLimitExceeded(150))
    assert sample("celery_task_failed_total", **labels) - before == 1


def test_retry_and_received_count_under_the_task_name(probe_app: Celery, handlers: None) -> None:
    labels = {"name": PROBE, "queue_name": "booking"}
    retried = sample("celery_task_retried_total", **labels)
    received = state("celery_task_received_total", **labels)
    task = probe_app.tasks[PROBE]
    signals.task_retry.send(sender=task, request=SimpleNamespace(id="not-running"), reason="later")
    signals.task_received.send(sender=None, request=_request(probe_app, "booking.metrics_probe"))
    assert sample("celery_task_retried_total", **labels) - retried == 1
    assert state("celery_task_received_total", **labels) - received == 1
    assert state("celery_task_received_total", name="user-chosen 42", queue_name="booking") == 0


def state(metric: str, /, **labels: str) -> float:
    """A sample of what the worker's main process reports from its own state."""
    registry = CollectorRegistry()
    registry.register(metrics.WorkerStateCollector())
    return registry.get_sample_value(metric, labels) or 0.0


def test_the_flusher_writes_finished_tasks_within_a_second(probe_app: Celery, handlers: None) -> None:
    labels = {"name": PROBE, "queue_name": "booking"}
    before = sample("celery_task_succeeded_total", **labels)
    run_traced(probe_app, PROBE, ("ada@example.com",), delivery_info={"routing_key": "booking.x"})
    deadline = time.monotonic() + 5
    while sample("celery_task_succeeded_total", **labels) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sample("celery_task_succeeded_total", **labels) - before == 1
    assert metrics._flusher is not None
    assert metrics._flusher.is_alive()


def _request(app: Celery, routing_key: str, shadow: str | None = "user-chosen 42") -> Request:
    body = json.dumps([["ada@example.com"], {}, {"callbacks": None, "errbacks": None, "chain": None}])
    message = Message(
        body=body,
        content_type="application/json",
        content_encoding="utf-8",
        headers={"id": str(uuid.uuid4()), "task": PROBE, "shadow": shadow},
        delivery_info={"routing_key": routing_key, "exchange": "magnetiq.tasks"},
    )
    return Request(message, app=app, task=app.tasks[PROBE])


def test_rejected_and_unknown_messages_never_label_with_their_content(handlers: None) -> None:
    before = sample("celery_task_rejected_total", name="unknown", queue_name="email")
    message = Message(body=b"{}", delivery_info={"routing_key": "email.send_welcome_email"})
    signals.task_rejected.send(sender=None, message=message, exc=None)
    signals.task_unknown.send(sender=None, message=message, exc=None, name="evil@example.com", id="1234")
    assert sample("celery_task_rejected_total", name="unknown", queue_name="email") - before == 2
    assert sample("celery_task_rejected_total", name="evil@example.com", queue_name="email") == 0


def test_published_tasks_count_as_sent_and_beat_runs_are_stamped(handlers: None) -> None:
    name = "app.tasks.maintenance.cleanup_old_sessions"
    before = sample("celery_task_sent_total", name=name, queue_name="maintenance")
    signals.after_task_publish.send(
        sender=name, headers={"celery_beat_task": True}, routing_key="maintenance.cleanup_old_sessions"
    )
    signals.after_task_publish.send(sender="a.b.user@example.com", headers={}, routing_key="zzz")
    assert sample("celery_task_sent_total", name=name, queue_name="maintenance") - before == 1
    assert sample("celery_task_sent_total", name="unknown", queue_name="unknown") >= 1
    assert time.time() - sample("magnetiq_beat_last_run_timestamp_seconds", name=name) < 5


def test_started_active_and_up_come_from_celery_worker_state(probe_app: Celery, handlers: None) -> None:
    started = state("celery_task_started_total", name=PROBE, queue_name="booking")
    assert state("celery_worker_up", worker="booking") == 0
    metrics.set_worker_up(True)
    # when the main process accepts two tasks, one under a shadow name (the producer's: never a label)
    requests = [_request(probe_app, "booking.metrics_probe", shadow) for shadow in (None, "user-chosen 42")]
    for request in requests:
        worker_state.task_accepted(request)
    try:
        assert state("celery_task_started_total", name=PROBE, queue_name="booking") - started == 1
        assert state("celery_task_started_total", name="unknown", queue_name="booking") >= 1
        assert state("celery_task_started_total", name="user-chosen 42", queue_name="booking") == 0
        assert state("celery_worker_tasks_active", worker="booking") == 2
        assert state("celery_worker_up", worker="booking") == 1
    finally:
        for request in requests:
            worker_state.task_ready(request)
    assert state("celery_worker_tasks_active", worker="booking") == 0


def test_install_is_off_when_the_port_is_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    receivers = len(signals.task_prerun.receivers)
    monkeypatch.setenv("METRICS_PORT", "0")
    assert metrics.install(Settings()) is False
    assert len(signals.task_prerun.receivers) == receivers
    assert resources.on_smtp_send is None


@pytest.fixture
def smtp_server() -> Iterator[int]:
    class Handler:
        async def handle_RCPT(
            self, server: Any, session: Any, envelope: Any, address: str, options: Any
        ) -> str:
            if address.startswith("refused"):
                return "550 no such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, ready_timeout=5)
    controller.start()
    yield port
    controller.stop()


def test_smtp_sends_are_observed_by_result(smtp_server: int, handlers: None) -> None:
    bridge = AsyncioBridge()

    def sender(port: int) -> AioSmtpSender:  # observed as resources wires it: through the hook
        return AioSmtpSender(SmtpConfig("127.0.0.1", port, timeout=2), bridge, observe=resources._smtp_sent)

    ok_sender, down = sender(smtp_server), sender(free_port())
    counts = {r: sample("magnetiq_smtp_sends_total", result=r) for r in ("ok", "transient", "permanent")}
    timed = sample("magnetiq_smtp_send_seconds_count", result="ok")

    ok_sender.send(_mail("ada@example.com"))
    with pytest.raises(SmtpPermanentError):
        ok_sender.send(_mail("refused@example.com"))
    with pytest.raises(SmtpTransientError):
        down.send(_mail("ada@example.com"))

    for result in counts:
        assert sample("magnetiq_smtp_sends_total", result=result) - counts[result] == 1
    assert sample("magnetiq_smtp_send_seconds_count", result="ok") - timed == 1


def _mail(to: str) -> Any:
    return build_message("Magnetiq <no-reply@magnetiq.example>", to, "Hi", "text", "<p>html</p>", key="m")


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    return int(done.stdout)


def _write(path: Path, counter: Counter, labels: tuple[str, ...], value: float) -> None:
    db = MmapedDict(str(path))
    metric = f"{counter._name}_total"
    db.write_value(mmap_key(counter._name, metric, list(counter._labelnames), list(labels), "h"), value, 0.0)
    db.close()


def test_process_files_are_summed_and_dead_processes_compacted(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), os.getppid()
    labels = (PROBE, "booking")
    _write(tmp_path / f"counter_{dead}.db", metrics.TASK_SUCCEEDED, labels, 3)
    _write(tmp_path / f"counter_{alive}.db", metrics.TASK_SUCCEEDED, labels, 4)
    (tmp_path / f"gauge_livesum_{dead}.db").write_bytes(b"")
    collector = metrics.ProcessFilesCollector(str(tmp_path))

    for _ in range(2):  # compaction never counts twice
        registry = CollectorRegistry()
        registry.register(collector)
        assert (
            registry.get_sample_value("celery_task_succeeded_total", {"name": PROBE, "queue_name": "booking"})
            == 7
        )

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["counter_archive.db", f"counter_{alive}.db"])


def test_broker_down_leaves_queue_samples_out_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    collector = metrics.BrokerCollector(f"amqp://guest:guest@127.0.0.1:{free_port()}//", timeout=0.5)
    with caplog.at_level(logging.WARNING, logger="workers.metrics"):
        families = [collector.collect(), collector.collect()]
    for scraped in families:
        assert [f.name for f in scraped] == [name for name, _ in metrics.QUEUE_GAUGES]
        assert all(f.samples == [] for f in scraped)
    assert len([r for r in caplog.records if "broker unreachable" in r.message]) == 1


def test_prefork_profiles_get_a_fresh_metrics_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("METRICS_PORT", "9808")
    monkeypatch.setenv("METRICS_DIR", str(tmp_path))
    monkeypatch.setattr(workers_main, "get_settings", Settings)
    stale = tmp_path / f"booking-{_dead_pid()}"
    stale.mkdir()
    own = tmp_path / f"booking-{os.getpid()}"
    own.mkdir()
    (own / "counter_1.db").write_bytes(b"old")
    environ: dict[str, str] = {"PROMETHEUS_MULTIPROC_DIR": "/elsewhere"}

    assert workers_main.prepare_metrics_dir("booking", environ) == own
    assert environ["PROMETHEUS_MULTIPROC_DIR"] == str(own)
    assert list(own.iterdir()) == []
    assert not stale.exists()

    for role in ("email", "beat"):  # one process: a plain registry
        assert workers_main.prepare_metrics_dir(role, environ) is None
        assert "PROMETHEUS_MULTIPROC_DIR" not in environ
    monkeypatch.setenv("METRICS_PORT", "0")
    assert workers_main.prepare_metrics_dir("booking", environ) is None


def test_serve_and_stop_on_a_free_port(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("METRICS_PORT", str(port))
    monkeypatch.setenv("METRICS_HOST", "127.0.0.1")
    assert worker_signals.serve_metrics(Settings(), worker=False) is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            assert b"celery_task_succeeded_total" in reply.read()
    finally:
        worker_signals.stop_metrics()
    assert worker_signals._server is None
