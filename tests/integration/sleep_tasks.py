"""Test-only tasks, never part of the fleet: workers load them with ``--include`` (``INCLUDE``).

Unrouted, so they go to the default queue (booking).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from app.celery_app import celery_app

#: Name of the sleep task, for ``send_task``.
SLEEP = "tests.integration.sleep_tasks.sleep"
#: Worker arguments that load this module.
INCLUDE = ("--include", "tests.integration.sleep_tasks")


@celery_app.task(name=SLEEP, bind=True)
def sleep(self: Any, seconds: float, marker: str | None = None) -> dict[str, Any]:
    """Sleep, touching ``marker`` first; return when it ran, where, and in which process."""
    started = time.time()
    if marker:
        Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return {"started": started, "finished": time.time(), "worker": self.request.hostname, "pid": os.getpid()}
