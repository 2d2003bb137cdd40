"""Per-process set-up and tear-down of worker resources, hooked to Celery signals."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import bootsteps, signals

from app.db import dispose_all
from app.settings import get_settings
from routing import declare_topology

log = logging.getLogger(__name__)


def green_psycopg() -> bool:
    """Make psycopg2 cooperative when gevent has patched this process.

    Returns:
        True if psycopg2 now yields to the gevent hub while waiting.
    """
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover
        return False
    if not monkey.is_module_patched("socket"):
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


@signals.worker_init.connect
def _on_worker_init(**_: Any) -> None:
    log.info("fleet worker starting: %s", get_settings().describe())


@signals.worker_process_init.connect
def _on_child_init(**_: Any) -> None:
    # A prefork child gets its own process group, so a group-wide SIGTERM (a
    # process runner, `kill -TERM -<pgid>`) starts the parent's warm shutdown
    # instead of killing tasks mid-flight. Hard time limits still use SIGKILL.
    os.setpgid(0, 0)


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    dispose_all()
