"""Worker profiles: pure data, one per queue-specific Deployment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from routing import names


@dataclass(frozen=True)
class WorkerProfile:
    """How one kind of worker runs: its queues, pool and limits."""

    #: Profile name; also the node name prefix (``<name>@%h``) and Deployment suffix.
    name: str
    #: Queues consumed.
    queues: tuple[str, ...]
    #: Celery pool: ``gevent`` for I/O-bound work, ``prefork`` for DB/CPU work.
    pool: str
    #: Greenlets or processes; 0 means ``per_core`` per CPU core.
    concurrency: int
    #: Messages prefetched per unit of concurrency.
    prefetch_multiplier: int
    #: Recycle a prefork child after this many tasks (leaks stay bounded).
    max_tasks_per_child: int | None = None
    #: Recycle a prefork child above this resident size, in KiB.
    max_memory_per_child: int | None = None
    #: Processes per core when ``concurrency`` is 0.
    per_core: int = 1

    @property
    def effective_concurrency(self) -> int:
        """The concurrency with 0 resolved from the number of cores."""
        return self.concurrency or (os.cpu_count() or 1) * self.per_core

    def argv(self, app: str = "workers.entry", loglevel: str = "INFO") -> list[str]:
        """Return the ``celery worker`` arguments (after the program name) for this profile."""
        args = [
            "-A",
            app,
            "worker",
            "--hostname",
            f"{self.name}@%h",
            "--queues",
            ",".join(self.queues),
            "--pool",
            self.pool,
            "--concurrency",
            str(self.effective_concurrency),
            "--prefetch-multiplier",
            str(self.prefetch_multiplier),
            "--loglevel",
            loglevel,
            # Gossip is chatter between every pair of workers; nothing here uses it.
            "--without-gossip",
            # Mingle asks every running worker for its revoked ids at start, a second's wait
            # per start (and per memory-guard restart); cancellations come from PostgreSQL.
            "--without-mingle",
        ]
        if self.max_tasks_per_child:
            args += ["--max-tasks-per-child", str(self.max_tasks_per_child)]
        if self.max_memory_per_child:
            args += ["--max-memory-per-child", str(self.max_memory_per_child)]
        return args


EMAIL = WorkerProfile("email", queues=(names.EMAIL,), pool="gevent", concurrency=100, prefetch_multiplier=4)
#: Bulk email: the same pool on a lane of its own (``routing.names.BULK``).
BULK = WorkerProfile("bulk", queues=(names.BULK,), pool="gevent", concurrency=100, prefetch_multiplier=4)
#: Booking tasks wait on PostgreSQL and the payment provider: with one process per core a
#: child sits idle while its result commits and its next message comes; two per core keep
#: the cores busy without prefetching (a prefetched message would wait behind a long task).
BOOKING = WorkerProfile(
    "booking",
    queues=(names.BOOKING,),
    pool="prefork",
    concurrency=0,
    prefetch_multiplier=1,
    max_tasks_per_child=5000,
    max_memory_per_child=512_000,
    per_core=2,
)
MAINTENANCE = WorkerProfile(
    "maintenance",
    queues=(names.MAINTENANCE,),
    pool="prefork",
    concurrency=1,
    prefetch_multiplier=1,
    max_tasks_per_child=100,
    max_memory_per_child=512_000,
)

#: Every profile by name.
PROFILES: dict[str, WorkerProfile] = {p.name: p for p in (EMAIL, BULK, BOOKING, MAINTENANCE)}


def redis_visibility_timeout(time_limit: int, eta_horizon: int) -> int:
    """Seconds a Redis broker waits before it redelivers a message a worker took and never acked.

    It must outlast the longest a message can rightly stay unacked: waiting in a
    worker's prefetch behind ``prefetch_multiplier`` others per process, each up to
    the hard ``time_limit``, then running to that limit itself, or held for its
    countdown or eta (up to ``eta_horizon``). Shorter delivers it twice; longer
    brings a killed worker's messages back that much later.
    """
    waits = max(profile.prefetch_multiplier for profile in PROFILES.values())
    return (waits + 1) * time_limit + eta_horizon
