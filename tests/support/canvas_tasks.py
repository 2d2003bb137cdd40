"""Test-only tasks for chains, groups and chords, never part of the fleet (``--include``, ``INCLUDE``).

Unrouted, so they go to the default queue (booking). ``tally`` appends a line to
a file per run: the tests count a body's runs from that file, not from the result.
"""

from __future__ import annotations

import os
import time
from typing import Any

from app.celery_app import celery_app
from app.tasks.base import FleetTask

#: Worker arguments that load this module.
INCLUDE = ("--include", "tests.support.canvas_tasks")


@celery_app.task(name="tests.canvas.add")
def add(x: int, y: int, pause: float = 0.0) -> int:
    """Return ``x + y`` after ``pause`` seconds."""
    time.sleep(pause)
    return x + y


@celery_app.task(name="tests.canvas.fail")
def fail(message: str) -> None:
    """Raise ``ValueError(message)``."""
    raise ValueError(message)


@celery_app.task(name="tests.canvas.retry_once", bind=True, max_retries=1)
def retry_once(self: Any, message: str) -> int:
    """Ask for one retry (``ValueError(message)``) at once; return how many retries it took."""
    if self.request.retries == 0:
        raise self.retry(exc=ValueError(message), countdown=0)
    return int(self.request.retries)


@celery_app.task(name="tests.canvas.tally")
def tally(values: Any, path: str) -> Any:
    """Append one line per run to ``path``; return ``values`` (a chord body's header results)."""
    with open(path, "a", encoding="utf-8") as runs:
        runs.write(f"{os.getpid()}\n")
    return values


@celery_app.task(name="tests.canvas.on_error")
def on_error(request: Any, exc: Any, traceback: Any, path: str) -> None:
    """An errback: append one line per call to ``path``."""
    with open(path, "a", encoding="utf-8") as calls:
        calls.write(f"{type(exc).__name__}\n")


def _lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as notes:
            return notes.read().split()
    except FileNotFoundError:
        return []


def _note(path: str, what: str) -> None:
    with open(path, "a", encoding="utf-8") as notes:
        notes.write(f"{what}\n")


@celery_app.task(name="tests.canvas.patient", bind=True, base=FleetTask)
def patient(self: FleetTask, path: str, seconds: float) -> str:
    """Note "started", work ``seconds`` asking every 0.1 s whether it was cancelled, note "finished"."""
    _note(path, "started")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        self.stop_if_cancelled()
        time.sleep(0.1)
    _note(path, "finished")
    return "finished"


@celery_app.task(name="tests.canvas.stubborn")
def stubborn(path: str, seconds: float) -> str:
    """Note "started", sleep ``seconds`` without ever asking whether it was cancelled, note "finished"."""
    _note(path, "started")
    time.sleep(seconds)
    _note(path, "finished")
    return "finished"


@celery_app.task(name="tests.canvas.steps", bind=True, base=FleetTask, progress_interval=0.0)
def steps(self: FleetTask, path: str, total: int) -> int:
    """Take ``total`` steps, each once ``path`` holds a line for it, reporting progress after each."""
    for done in range(1, total + 1):
        while len(_lines(path)) < done:
            time.sleep(0.05)
        self.report_progress(done, total)
    return total


#: What ``leak`` holds on to, for as long as its process lives.
_leaked: list[bytes] = []


@celery_app.task(name="tests.canvas.leak")
def leak(mib: int) -> int:
    """Keep ``mib`` MiB resident in this process for good (a leak); return the MiB leaked so far."""
    _leaked.append(b"\x01" * (mib * 2**20))
    return sum(len(block) for block in _leaked) // 2**20
