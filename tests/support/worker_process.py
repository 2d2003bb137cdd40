"""A real worker process, ``python -m workers <role>``, for the integration tests and the fault harness."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT


def terminate(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    """SIGTERM a process this test started; SIGKILL it only after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


class WorkerProcess:
    """A worker started from the project root, everything it prints kept in ``log_path``."""

    def __init__(
        self, role: str, log_path: Path, env: dict[str, str], extra: list[str], *, append: bool = False
    ) -> None:
        """Start ``python -m workers <role> <extra>`` with ``env``; ``append`` keeps an existing log."""
        self.role = role
        self.log_path = log_path
        self._log = log_path.open("ab" if append else "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers", role, *extra],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        """Everything the worker printed so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """Warm-shut the worker down (SIGTERM), killing it only after ``timeout``; return its exit code."""
        code = terminate(self.proc, timeout)
        self._log.close()
        return code
