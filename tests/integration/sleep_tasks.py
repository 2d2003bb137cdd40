"""Test-only tasks, never part of the fleet: workers load them with ``--include`` (``INCLUDE``).

Unrouted, so they go to the default queue (booking).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from app.celery_app import celery_app

#: Name of the sleep task, for ``send_task``.
SLEEP = "tests.integration.sleep_tasks.sleep"
#: Name of the task that kills its own process, for ``send_task``.
CRASH = "tests.integration.sleep_tasks.crash"
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


@celery_app.task(name=CRASH)
def crash(marker: str) -> None:
    """Append this process's pid to ``marker``, then SIGKILL this process (a segfault, an OOM kill)."""
    with Path(marker).open("a") as runs:
        runs.write(f"{os.getpid()}\n")
    os.kill(os.getpid(), signal.SIGKILL)
