"""Bench-only tasks and signal hooks, registered on whichever app imports them.

The worker writes a timestamp file when its consumer is ready and the sentinel
task writes one when it runs; drain time is the difference. Paths come from
the environment the harness gives the worker.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery, signals


def write_stamp(path: str, value: float | None = None) -> None:
    """Atomically write a float timestamp to ``path``."""
    tmp = f"{path}.tmp"
    Path(tmp).write_text(repr(time.time() if value is None else value))
    os.replace(tmp, path)


def register(app: Celery) -> None:
    """Register the bench tasks on ``app`` and the ready-stamp signal."""

    @app.task(name="bench.noop")
    def noop(i: int) -> int:
        return i

    @app.task(name="bench.sentinel")
    def sentinel(path: str) -> str:
        write_stamp(path)
        return "done"

    @app.task(name="bench.latency", ignore_result=True)
    def latency(sent: float, out_dir: str) -> None:
        delay = time.time() - sent
        with open(os.path.join(out_dir, f"lat-{os.getpid()}.txt"), "a") as out:
            out.write(f"{delay:.6f}\n")

    @signals.worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        path = os.environ.get("BENCH_READY_FILE")
        if path:
            write_stamp(path)
