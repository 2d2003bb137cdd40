"""Per-process set-up and tear-down of worker resources, hooked to Celery signals."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any
from wsgiref.simple_server import WSGIServer

from celery import bootsteps, signals
from prometheus_client import start_http_server
from prometheus_client.multiprocess import mark_process_dead

from app.db import dispose_all
from app.settings import Settings, get_settings
from routing import declare_topology
from workers import metrics

log = logging.getLogger(__name__)


def green_psycopg() -> bool:
    """Make psycopg2 cooperative when gevent has patched this process.

    Returns:
        True if psycopg2 now yields to the gevent hub while waiting.
    """
    # Celery's gevent pool patches before the app is imported; a process it did not
    # patch never imports gevent (about 3 MiB) just to learn that.
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("socket"):
        return False
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
    return True


class DeclareTopology(bootsteps.StartStopStep):
    """Declare exchanges, queues and DLQs each time the consumer connects."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, consumer: Any) -> None:
        """Declare the topology on the consumer's connection (idempotent)."""
        declared = declare_topology(consumer.connection)
        log.info("topology declared: %s", ", ".join(declared))


_server: WSGIServer | None = None


def serve_metrics(settings: Settings, *, worker: bool) -> WSGIServer | None:
    """Start this process's ``/metrics`` server on a daemon thread, once; a busy port is only logged.

    Args:
        settings: where to listen (``METRICS_HOST``, ``METRICS_PORT``).
        worker: a worker's main process (adds worker state and queue depths), not beat.

    Returns:
        The running server, or None when the port could not be bound.
    """
    global _server
    if _server is None:
        where = f"{settings.metrics_host}:{settings.metrics_port}"
        try:
            registry = metrics.exposition_registry(settings, worker=worker)
            _server, _ = start_http_server(settings.metrics_port, settings.metrics_host, registry)
        except OSError as exc:
            log.error("metrics endpoint not started on %s: %s", where, exc)
            return None
        log.info("metrics endpoint on http://%s/metrics", where)
    return _server


def stop_metrics() -> None:
    """Stop this process's ``/metrics`` server, if it runs one."""
    global _server
    server, _server = _server, None
    if server is not None:
        server.shutdown()
        server.server_close()


#: Celery's loggers of the per-task lines (received; succeeded and retried; a retry keeps its line below).
PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


@signals.after_setup_logger.connect
def _on_setup_logger(**_: Any) -> None:
    # Runs before the consumer and the tracers are built: both read the level once.
    if not get_settings().log_each_task:
        for name in PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


@signals.task_retry.connect
def _on_task_retry(sender: Any, request: Any = None, reason: Any = None, **_: Any) -> None:
    # With the per-task lines off, a retry keeps its line, in Celery's words: retries
    # are rare, and their reason (a 421, a busy key) is what an operator looks for.
    if not get_settings().log_each_task:
        log.info("Task %s[%s] retry: %s", sender.name, getattr(request, "id", None), reason)


@signals.worker_init.connect
def _on_worker_init(sender: Any, **_: Any) -> None:
    settings = get_settings()
    log.info("fleet worker starting: %s", settings.describe())
    if settings.metrics_port:
        # Still the only process: prefork children inherit the label, and the
        # main process alone serves /metrics (with the scrape-time queue depths).
        metrics.bind_worker(str(sender.hostname).split("@", 1)[0])  # the profile, never the host
        if "prefork" in str(sender.pool_cls) and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            log.warning("prefork without PROMETHEUS_MULTIPROC_DIR: children's metrics are lost")
        serve_metrics(settings, worker=True)


@signals.worker_ready.connect
def _on_worker_ready(**_: Any) -> None:
    metrics.set_worker_up(True)


@signals.beat_init.connect
def _on_beat_init(**_: Any) -> None:
    settings = get_settings()
    if settings.metrics_port:
        serve_metrics(settings, worker=False)


@signals.worker_process_init.connect
def _on_child_init(**_: Any) -> None:
    # A prefork child gets its own process group, so a group-wide SIGTERM (a
    # process runner, `kill -TERM -<pgid>`) starts the parent's warm shutdown
    # instead of killing tasks mid-flight. Hard time limits still use SIGKILL.
    os.setpgid(0, 0)


@signals.worker_process_shutdown.connect
def _on_child_shutdown(pid: int | None = None, **_: Any) -> None:
    dispose_all()
    metrics.flush()  # what the flusher thread has not written yet
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:  # prometheus_client's bookkeeping: drop the exited child's live gauges
        mark_process_dead(pid or os.getpid(), path)  # type: ignore[no-untyped-call]


@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    dispose_all()
    metrics.flush()
    metrics.set_worker_up(False)
    stop_metrics()
