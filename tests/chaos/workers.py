"""The real worker and beat processes of a fault case, ended by process id only."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from tests.support.processes import descendants, pid_alive
from tests.support.waiting import wait_until as wait_for
from tests.support.worker_process import WorkerProcess


class Worker(WorkerProcess):
    """A real worker process with the test-only faults module (beat runs without it)."""

    def __init__(self, role: str, log_path: Path, env: dict[str, str], extra: list[str]) -> None:
        include = [] if role == "beat" else ["--include", "tests.chaos.faults"]
        super().__init__(role, log_path, env, [*include, *extra], append=True)

    def kill(self) -> None:
        """SIGKILL the worker and every process it started (ids read from /proc first)."""
        family = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in family:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    signal_pid(pid, signal.SIGKILL)
        self.proc.wait(30)
        wait_for(lambda: not any(pid_alive(pid) for pid in family), 30, "the killed worker's processes")

    def stop(self, timeout: float = 30) -> int:
        """Warm shutdown; past ``timeout`` the worker is killed, and so is every process it started."""
        family = descendants(self.proc.pid) if self.proc.poll() is None else []
        code = super().stop(timeout)
        if code == -signal.SIGKILL:
            for pid in family:
                if pid_alive(pid):
                    signal_pid(pid, signal.SIGKILL)
        return code


def beat_role(beat: Worker) -> str | None:
    """``leading`` or ``standby``, as the beat's log last said (None before it said either)."""
    lines = [
        line for line in beat.log().splitlines() if "beat: leading as" in line or "beat: standby" in line
    ]
    if not lines:
        return None
    return "leading" if "leading as" in lines[-1] else "standby"


def signal_pid(pid: int, signum: int) -> None:
    """Signal one process the harness started (never by name)."""
    os.kill(pid, signum)
