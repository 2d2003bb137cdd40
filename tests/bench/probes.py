"""Bench-only tasks and signal hooks, registered on whichever app imports them.

The worker writes a timestamp file when its consumer is ready and the sentinel
task writes one when it runs; drain time is the difference. Paths come from
the environment the harness gives the worker.
"""

from __future__ import annotations

import os
import smtplib
import time
from email.message import EmailMessage
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

    @app.task(name="bench.plain_email")
    def plain_email(i: int, host: str, port: int) -> str:
        # What a plain Celery email task does: one smtplib connection per mail.
        message = EmailMessage()
        message["From"] = "Magnetiq <no-reply@magnetiq.local>"
        message["To"] = f"user{i}@example.com"
        message["Subject"] = f"Welcome to Magnetiq, User {i}!"
        message.set_content(f"Hello User {i},\n\nwelcome to Magnetiq!\n")
        message.add_alternative(f"<h1>Hello User {i},</h1><p>welcome to Magnetiq!</p>", subtype="html")
        with smtplib.SMTP(host, port, timeout=10) as smtp:
            smtp.send_message(message)
        return "sent"

    @app.task(name="bench.latency", ignore_result=True)
    def latency(sent: float, out_dir: str) -> None:
        delay = time.time() - sent
        with open(os.path.join(out_dir, f"lat-{os.getpid()}.txt"), "a") as out:
            out.write(f"{delay:.6f}\n")

    @app.task(name="bench.finished")
    def finished() -> float:
        return time.time()  # the moment the task ended; the result wait is measured from it

    @signals.worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        path = os.environ.get("BENCH_READY_FILE")
        if path:
            write_stamp(path)
