"""The memory guard: a worker process over ``WORKER_MAX_MEMORY_MIB`` restarts itself, warm, in place.

Prefork children recycle on tasks and memory (``--max-tasks-per-child``,
``--max-memory-per-child``); a gevent worker runs every task in one process
that nothing recycles, so a leak grows until the kernel kills it mid-send.
The guard checks the process's resident size every second; past the limit it
asks Celery for a warm shutdown (no new task starts, running ones finish and
are acked, prefetched ones go back to the queue unstarted), and the process
then execs its own command line again: same pid, so a supervisor (Kubernetes,
``make run``) sees nothing but a short pause. This is Celery's SIGHUP restart,
with the command line ``python -m celery`` was started with.
"""

from __future__ import annotations

import atexit
import logging
import os
import resource
import sys
from typing import Any

from celery.platforms import EX_OK, close_open_fds
from celery.worker import state

from app.settings import get_settings
from workers.timers import RepeatingStep

log = logging.getLogger(__name__)

#: Seconds between two checks of the resident size.
CHECK_SECONDS = 1.0


def resident_mib() -> float:
    """This process's resident size now, MiB (its peak where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _start_again() -> None:
    # At exit, after the warm shutdown: the same interpreter options and arguments,
    # so `python -m celery ...` stays a module run (Celery's own restart execs argv[0],
    # which for -m is celery/__main__.py, a file that cannot run as a script).
    close_open_fds({0, 1, 2})  # stdin, stdout, stderr stay: the worker's log goes on
    os.execv(sys.executable, sys.orig_argv)


class MemoryGuard(RepeatingStep):
    """Worker step: restart the worker warm when its resident size passes ``WORKER_MAX_MEMORY_MIB``."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.limit = get_settings().worker_max_memory_mib
        self.tripped = False

    def start(self, worker: Any) -> None:
        """Check every second (a limit of 0 turns the guard off)."""
        if self.limit:
            self.repeat(worker, CHECK_SECONDS, self.check)

    def check(self) -> None:
        """Past the limit: a warm shutdown, then the same command again in this process."""
        size = resident_mib()
        if self.tripped or size <= self.limit:
            return
        self.tripped = True
        log.warning(
            "memory guard: resident %.0f MiB over WORKER_MAX_MEMORY_MIB=%d: warm shutdown, "
            "then this worker starts again (pid %d)",
            size,
            self.limit,
            os.getpid(),
        )
        atexit.register(_start_again)
        state.should_stop = EX_OK  # type: ignore[assignment]  # the stubs type it None; Celery sets exit codes
