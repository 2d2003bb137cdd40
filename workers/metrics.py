"""Prometheus metrics of a worker or beat: definitions, signal handlers, the ``/metrics`` server."""

from __future__ import annotations

import collections
import glob
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import signals
from celery.states import SUCCESS
from celery.worker import state as worker_state
from kombu import Connection
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector

from app.celery_app import celery_app
from app.settings import Settings
from app.tasks import resources
from routing import names
from routing.routes import queue_for
from workers.processes import pid_alive
from workers.profiles import PROFILES

log = logging.getLogger(__name__)

#: Task runtimes, seconds: Prometheus' defaults plus the prefork time-limit range.
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: Publish-to-start waits, seconds: up to RabbitMQ's 30 min consumer timeout.
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800)
#: One SMTP conversation, seconds.
SMTP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Seconds between writes of finished tasks' samples (metrics lag by at most this much).
FLUSH_SECONDS = 1.0
#: Label value for a task name or queue the fleet does not know (never the raw value).
UNKNOWN = "unknown"
#: Work queues: the routing-key word that names the label ``queue_name``.
WORK_QUEUES = frozenset(names.WORK_QUEUES)

# celery-exporter's names (dashboards and alerts work), ours prefixed magnetiq_; label values are
# task, queue, exception and profile names, never ids or user data. Started, active: WorkerStateCollector.
_TASK = ("name", "queue_name")
TASK_SENT = Counter("celery_task_sent", "Tasks published by this process.", _TASK)
TASK_SUCCEEDED = Counter("celery_task_succeeded", "Tasks that returned.", _TASK)
TASK_FAILED = Counter("celery_task_failed", "Tasks that raised.", (*_TASK, "exception"))
TASK_RETRIED = Counter("celery_task_retried", "Tasks that asked to be retried.", _TASK)
TASK_REJECTED = Counter("celery_task_rejected", "Messages rejected: unknown task or format.", _TASK)
TASK_REVOKED = Counter("celery_task_revoked", "Tasks revoked: cancelled, expired or terminated.", _TASK)
TASK_RUNTIME = Histogram("celery_task_runtime", "Task run time, seconds.", _TASK, buckets=RUNTIME_BUCKETS)
_WAIT = ("magnetiq_task_queue_wait_seconds", "Seconds from publish (or ETA) to start, from sent_at.")
QUEUE_WAIT = Histogram(*_WAIT, _TASK, buckets=WAIT_BUCKETS)
_BEAT = ("magnetiq_beat_last_run_timestamp_seconds", "When beat last published a periodic task.")
BEAT_LAST_RUN = Gauge(*_BEAT, ("name",), multiprocess_mode="livemax")  # beat is one process
BEAT_LEADER = Gauge(
    "magnetiq_beat_leader",
    "1 while this beat replica holds the lease and sends, else 0.",
    multiprocess_mode="livemax",
)
SMTP_SECONDS = Histogram("magnetiq_smtp_send_seconds", "SMTP send time.", ("result",), buckets=SMTP_BUCKETS)
SMTP_SENDS = Counter("magnetiq_smtp_sends", "SMTP sends by result (ok, transient, permanent).", ("result",))
#: Scrape-time gauges (name, help), all labelled ``queue_name``.
QUEUE_GAUGES = (
    ("celery_queue_length", "Ready messages in a work queue."),
    ("magnetiq_dlq_messages", "Messages in a dead-letter queue."),
    ("magnetiq_queue_consumers", "Consumers of a queue."),
)


@dataclass(frozen=True, slots=True)
class Series:
    """The label children of one (task name, queue), bound once per process."""

    name: str
    queue: str
    sent: Counter
    succeeded: Counter
    retried: Counter
    runtime: Histogram
    wait: Histogram


_SERIES_METRICS = (TASK_SENT, TASK_SUCCEEDED, TASK_RETRIED, TASK_RUNTIME, QUEUE_WAIT)
_series: dict[tuple[str, str], Series] = {}
#: Task name -> its series on this worker (names are the registered tasks: bounded).
_by_name: dict[str, Series] = {}
#: task id -> perf_counter at its start, for the tasks running in this process.
_running: dict[str, float] = {}
#: Tasks received by this (main) process, by registered name: exported at scrape time.
_received: collections.Counter[str] = collections.Counter()
#: Finished tasks whose samples the flusher has not written yet: (name, runtime, end, request, state).
_finished: collections.deque[tuple[str, float, float, Any, str | None]] = collections.deque()
_flusher: threading.Thread | None = None
_worker = UNKNOWN
_worker_queue: str | None = None
_up = False


def series(name: str, queue: str) -> Series:
    """Return the cached label children of a task name on a queue."""
    found = _series.get((name, queue))
    if found is None:
        children: list[Any] = [metric.labels(name, queue) for metric in _SERIES_METRICS]
        found = _series[(name, queue)] = Series(name, queue, *children)
    return found


def worker_series(name: str) -> Series:
    """The series of a task this worker runs, queued by its route, else by the worker's one queue."""
    found = _by_name.get(name)
    if found is None:
        found = _by_name[name] = series(name, queue_for(name) or _worker_queue or UNKNOWN)
    return found


def queue_label(task_name: str, routing_key: str | None) -> str:
    """The queue of a published task: its route, else the queue word of its routing key."""
    word = routing_key.rsplit(".", 2)[-2] if routing_key and "." in routing_key else routing_key
    return queue_for(task_name) or (word if word in WORK_QUEUES else UNKNOWN)


def task_label(name: str | None) -> str:
    """Return ``name`` if the fleet knows the task (registered or routed), else ``unknown``."""
    return name if name and (name in celery_app.tasks or queue_for(name)) else UNKNOWN


def queue_wait(request: Any, started_at: float) -> float | None:
    """Seconds a task waited, from its ``sent_at`` header or its ETA, whichever is later."""
    sent_at = getattr(request, "sent_at", None)
    if not isinstance(sent_at, int | float):
        return None
    if request.eta:  # a countdown or retry backoff is not queueing
        sent_at = max(sent_at, datetime.fromisoformat(request.eta).timestamp())
    return max(0.0, started_at - sent_at)


def _on_published(sender: str | None = None, headers: dict[str, Any] | None = None, **kw: Any) -> None:
    name = task_label(sender)
    series(name, queue_label(name, kw.get("routing_key"))).sent.inc()
    if headers and headers.get("celery_beat_task"):  # set by beat on what it publishes
        BEAT_LAST_RUN.labels(name).set(time.time())


def _on_received(request: Any, **_: Any) -> None:
    _received[request.task.name] += 1  # the registered name, never a shadow


def _on_prerun(task_id: str, **_: Any) -> None:
    _running[task_id] = time.perf_counter()


def _on_postrun(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
    # A cold prometheus write costs tens of microseconds inside a busy task process; queue the
    # samples instead and let the flusher write them, warm and in bulk, once a second.
    started = _running.pop(task_id, None)
    if started is not None:
        _finished.append((task.name, time.perf_counter() - started, time.time(), task.request, state))
        if _flusher is None:
            _start_flusher()


def _start_flusher() -> None:
    global _flusher
    _flusher = threading.Thread(target=_flush_forever, name="metrics-flusher", daemon=True)
    _flusher.start()


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        flush()


def flush() -> None:
    """Write the samples of the tasks this process finished (the flusher does it every second)."""
    while _finished:
        try:
            name, runtime, ended, request, state = _finished.popleft()
        except IndexError:  # another flush took the last one
            return
        found = worker_series(name)
        found.runtime.observe(runtime)
        wait = queue_wait(request, ended - runtime)
        if wait is not None:
            found.wait.observe(wait)
        if state == SUCCESS:
            found.succeeded.inc()


def _forget_flusher() -> None:  # a forked child has no flusher thread
    global _flusher
    _flusher = None


os.register_at_fork(after_in_child=_forget_flusher)


def _on_failure(sender: Any, exception: Any = None, **_: Any) -> None:
    # Also sent by the parent after a time limit or a lost process.
    found = worker_series(sender.name)
    TASK_FAILED.labels(found.name, found.queue, type(exception).__name__).inc()


def _on_retry(sender: Any, **_: Any) -> None:
    worker_series(sender.name).retried.inc()


def _on_revoked(sender: Any = None, **_: Any) -> None:
    # Sent by the worker that skipped or terminated the task, or by a task that stopped itself.
    found = worker_series(getattr(sender, "name", None) or UNKNOWN)
    TASK_REVOKED.labels(found.name, found.queue).inc()


def _on_rejected(message: Any = None, **_: Any) -> None:
    # The task name of an unknown or malformed message is the sender's data: never a label.
    routing_key = (getattr(message, "delivery_info", None) or {}).get("routing_key")
    TASK_REJECTED.labels(UNKNOWN, queue_label(UNKNOWN, routing_key)).inc()


def observe_smtp(result: str, seconds: float) -> None:
    """Record one SMTP send (the ``resources.on_smtp_send`` hook)."""
    SMTP_SENDS.labels(result).inc()
    SMTP_SECONDS.labels(result).observe(seconds)


#: Signal -> handler for what runs per task or per publish.
TASK_HANDLERS: tuple[tuple[Any, Callable[..., None]], ...] = (
    (signals.after_task_publish, _on_published),
    (signals.task_received, _on_received),
    (signals.task_prerun, _on_prerun),
    (signals.task_postrun, _on_postrun),
    (signals.task_failure, _on_failure),
    (signals.task_retry, _on_retry),
    (signals.task_revoked, _on_revoked),
    (signals.task_rejected, _on_rejected),
    (signals.task_unknown, _on_rejected),
)


def connect_handlers() -> None:
    """Count tasks and SMTP sends in this process (idempotent)."""
    for signal, handler in TASK_HANDLERS:
        signal.connect(handler, weak=False, dispatch_uid=f"magnetiq-metrics-{handler.__name__}")
    resources.on_smtp_send = observe_smtp


def disconnect_handlers() -> None:
    """Stop counting (the inverse of ``connect_handlers``)."""
    for signal, handler in TASK_HANDLERS:
        signal.disconnect(handler, dispatch_uid=f"magnetiq-metrics-{handler.__name__}")
    resources.on_smtp_send = None


class BrokerCollector:
    """Queue depths and consumers by passive declares at scrape time, on a kept connection."""

    def __init__(
        self, broker_url: str, timeout: float = 2.0, ssl: Callable[[], dict[str, Any] | None] | None = None
    ) -> None:
        """Declare on ``broker_url``; ``ssl`` returns the TLS options of each new connection."""
        self._url = broker_url
        self._ssl = ssl or (lambda: None)
        self._timeout = timeout
        self._connection: Connection | None = None
        self._lock = threading.Lock()
        self._failing = False

    def collect(self) -> list[Metric]:
        """Read every queue now; an unreachable broker yields the families without samples."""
        with self._lock:
            return self._families(self._read())

    @staticmethod
    def _families(depths: dict[str, tuple[int, int | None]]) -> list[Metric]:
        length, dlq, consumers = (GaugeMetricFamily(*about, labels=["queue_name"]) for about in QUEUE_GAUGES)
        for queue, (ready, count) in depths.items():
            (length if queue in WORK_QUEUES else dlq).add_metric([queue], ready)
            if count is not None:
                consumers.add_metric([queue], count)
        return [length, dlq, consumers]

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.release()

    def _read(self) -> dict[str, tuple[int, int | None]]:
        try:
            depths = self._declare_each(self._connect())
        except Exception as exc:  # whatever the broker does, /metrics must answer
            self._close()  # reconnect on the next scrape (a restarted broker costs one scrape)
            if not self._failing:
                log.warning("queue metrics left out: broker unreachable (%s)", exc)
            self._failing = True
            return {}
        if self._failing:
            log.info("queue metrics back: broker reachable")
        self._failing = False
        return depths

    def _connect(self) -> Connection:
        if self._connection is None:
            timeouts = {"read_timeout": self._timeout, "write_timeout": self._timeout}
            connection = Connection(
                self._url, connect_timeout=self._timeout, transport_options=timeouts, ssl=self._ssl() or False
            )
            connection.ensure_connection(max_retries=0)
            self._connection = connection
        return self._connection

    def _declare_each(self, connection: Connection) -> dict[str, tuple[int, int | None]]:
        depths: dict[str, tuple[int, int | None]] = {}
        queues = (*names.WORK_QUEUES, *map(names.dlq, names.WORK_QUEUES))
        if connection.transport.driver_type == "redis":
            # A Redis queue is a list (the fleet publishes no priorities, so one list
            # each), empty when it does not exist; Redis knows no consumer count.
            client = connection.default_channel.client  # type: ignore[attr-defined]
            return {queue: (int(client.llen(queue)), None) for queue in queues}
        for queue in queues:
            try:
                with connection.channel() as channel:
                    _, ready, consumers = channel.queue_declare(queue, passive=True)  # type: ignore[attr-defined]
            except connection.channel_errors:
                continue  # not declared (yet): no sample for it
            depths[queue] = (int(ready), int(consumers))
        return depths


class ProcessFilesCollector:
    """Every process's samples, summed; exited processes' files are folded into archives first."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def collect(self) -> list[Metric]:
        """Compact, then merge every file as prometheus_client's MultiProcessCollector does."""
        with self._lock:
            self.compact()
            files = glob.glob(os.path.join(self._path, "*.db"))
            return list(MultiProcessCollector.merge(files, accumulate=True))  # type: ignore[no-untyped-call]

    def compact(self) -> None:
        """Fold the files of exited processes into ``<type>_archive.db`` and remove them."""
        for path in glob.glob(os.path.join(self._path, "*_*.db")):
            kind, _, rest = os.path.basename(path).removesuffix(".db").partition("_")
            pid = rest.rsplit("_", 1)[-1]
            if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
                continue
            if kind != "gauge":  # an exited process's gauges mean nothing (ours are all live*)
                archive = MmapedDict(os.path.join(self._path, f"{kind}_archive.db"))  # type: ignore[no-untyped-call]
                try:
                    for key, value, _, _ in MmapedDict.read_all_values_from_file(path):  # type: ignore[no-untyped-call]
                        archive.write_value(key, archive.read_value(key)[0] + value, 0.0)  # type: ignore[no-untyped-call]
                finally:
                    archive.close()  # type: ignore[no-untyped-call]
            os.remove(path)


class WorkerStateCollector:
    """Received, started and active tasks and worker_up: counts this main process keeps anyway."""

    def collect(self) -> list[Metric]:
        """Read them now (never creating label children here: a fork could copy a held lock)."""
        received = CounterMetricFamily("celery_task_received", "Tasks received.", labels=list(_TASK))
        started = CounterMetricFamily("celery_task_started", "Tasks started.", labels=list(_TASK))
        for family, counts in ((received, _received), (started, worker_state.total_count)):
            totals: collections.Counter[tuple[str, str]] = collections.Counter()
            for name, count in list(counts.items()):  # total_count is keyed by request name (or shadow)
                label = task_label(name)
                totals[(label, queue_for(label) or _worker_queue or UNKNOWN)] += count
            for labels, count in totals.items():
                family.add_metric(labels, count)
        active = GaugeMetricFamily("celery_worker_tasks_active", "Tasks running.", labels=["worker"])
        active.add_metric([_worker], len(worker_state.active_requests))
        up = GaugeMetricFamily("celery_worker_up", "1 while the worker consumes.", labels=["worker"])
        up.add_metric([_worker], 1 if _up else 0)
        return [received, started, active, up]


def exposition_registry(settings: Settings, *, worker: bool) -> CollectorRegistry:
    """Build what ``/metrics`` serves: every process's samples, plus worker state and queue depths."""
    registry = CollectorRegistry()
    # Prefork: every process writes its samples under this directory (python -m workers sets it).
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    registry.register(ProcessFilesCollector(path) if path else REGISTRY)
    if worker:
        registry.register(WorkerStateCollector())
        registry.register(BrokerCollector(settings.celery_broker_url, ssl=lambda: settings.broker_ssl))
    return registry


def bind_worker(profile: str) -> None:
    """Label this worker's metrics with its profile; prefork children inherit it, so call it first."""
    global _worker, _worker_queue
    queues = PROFILES[profile].queues if profile in PROFILES else ()
    _worker, _worker_queue = profile or UNKNOWN, queues[0] if len(queues) == 1 else None


def set_worker_up(up: bool) -> None:
    """Report ``celery_worker_up`` as 1 (consuming) or 0."""
    global _up
    _up = up


def install(settings: Settings) -> bool:
    """Count tasks in this process unless ``METRICS_PORT`` is 0; ``workers.signals`` serves them.

    Returns:
        Whether metrics are on.
    """
    if settings.metrics_port:
        connect_handlers()
    return bool(settings.metrics_port)
