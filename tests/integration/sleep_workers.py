"""Booking workers that run the test-only sleep tasks, each in a process group of its own.

A group of its own lets a test do what a container runtime does when the grace
period ends: SIGKILL the worker and its pool children together.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from kombu import Connection

from routing import names
from tests.integration.sleep_tasks import INCLUDE
from tests.support.broker import queue_depth
from tests.support.environment import worker_env
from tests.support.paths import ROOT
from tests.support.waiting import wait_until


class SleepWorker:
    """``python -m workers booking --concurrency 1`` with the sleep tasks loaded."""

    def __init__(self, name: str, tmp_path: Path, **env: str) -> None:
        """Start it; ``env`` overrides the tests' worker environment (another broker, shorter limits)."""
        self.node = f"{name}@%h"
        self.log_path = tmp_path / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers",
                "booking",
                "--concurrency",
                "1",
                "--hostname",
                self.node,
                *INCLUDE,
            ],
            cwd=ROOT,
            env=worker_env(HEALTH_DIR=str(tmp_path / f"{name}-health"), **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_consuming(self, broker: Connection, consumers: int) -> None:
        """Wait until this worker is ready and the booking queue has ``consumers`` consumers."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log()}")
            return "ready." in self.log() and queue_depth(broker, names.BOOKING)[1] >= consumers

        wait_until(ready, 60, f"{self.node} to consume booking", interval=0.2)

    def kill_group(self) -> None:
        """SIGKILL the worker and its pool children, as a runtime does when the grace period ends."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> None:
        """Warm shutdown (SIGTERM); the whole group is killed only after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
        self._log.close()
