"""Where a drain's CPU went: the worker's main process, its children, RabbitMQ, PostgreSQL, Redis.

Read from ``/proc`` at the start and end of the measured phase, as the
reference measurements do. It tells a CPU-bound drain (the machine's cores
near full) from a latency-bound one (cores idle while one message at a time
waits on a round trip), which is what decides whether making a step cheaper
makes the drain faster.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import descendants

#: Clock ticks per second of ``/proc/<pid>/stat`` CPU times.
HZ = os.sysconf("SC_CLK_TCK")
#: Groups reported, in table order (pid tree roots or process names).
GROUPS = ("worker main", "worker children", "RabbitMQ", "PostgreSQL", "Redis")
_NAMES = {"beam.smp": "RabbitMQ", "postgres": "PostgreSQL", "redis-server": "Redis"}


@dataclass(frozen=True)
class Snapshot:
    """CPU ticks used so far, by pid (with the process's name), and the machine's busy/total ticks."""

    ticks: dict[int, tuple[str, int]]
    busy: int
    total: int


def snapshot() -> Snapshot:
    """Read every process's user+system ticks and the machine totals."""
    ticks: dict[int, tuple[str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # exited while we looked
            continue
        # The name is in parentheses and may itself contain spaces or parentheses.
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks[int(entry)] = (name, int(fields[11]) + int(fields[12]))
    cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = cpu[3] + cpu[4]  # idle + iowait
    return Snapshot(ticks, sum(cpu) - idle, sum(cpu))


@dataclass(frozen=True)
class CpuUse:
    """CPU used during a measured phase."""

    #: CPU seconds per group (``GROUPS``).
    seconds: dict[str, float]
    #: Share of all the machine's cores that were busy, 0..1.
    machine_busy: float

    def per_item_us(self, n: int) -> dict[str, float]:
        """Microseconds of CPU per item (task, email) by group."""
        return {group: seconds / n * 1e6 for group, seconds in self.seconds.items()}


def cpu_use(before: Snapshot, after: Snapshot, worker_pid: int, children: Collection[int]) -> CpuUse:
    """Attribute the ticks between two snapshots to ``GROUPS``; a process started in between counts in full.

    ``children`` are the worker's descendants when ``after`` was taken, so a
    prefork child recycled during the phase is not counted: the figure is a floor.
    """
    seconds = dict.fromkeys(GROUPS, 0.0)
    for pid, (name, ticks) in after.ticks.items():
        if pid == worker_pid:
            group: str | None = "worker main"
        elif pid in children:
            group = "worker children"
        else:
            group = _NAMES.get(name)
        if group is None:
            continue
        earlier = before.ticks.get(pid)
        used = ticks - (earlier[1] if earlier and earlier[0] == name else 0)
        seconds[group] += max(used, 0) / HZ
    total = after.total - before.total
    return CpuUse(seconds, (after.busy - before.busy) / total if total else 0.0)


def cpu_since(before: Snapshot, worker_pid: int) -> CpuUse:
    """The CPU used since ``before``, the worker's process tree read now."""
    return cpu_use(before, snapshot(), worker_pid, set(descendants(worker_pid)))


#: Iterations of the fixed loop ``loop_ms`` times (about 35 ms on this machine's cores).
SPEED_LOOP = 1_000_000


def loop_ms(tries: int = 3) -> float:
    """Milliseconds one core takes for a fixed pure-Python loop: the best of ``tries``.

    A shared host's cores do not always run at the same speed. Taken before every
    measurement, it shows when the machine itself got slower or faster during a
    run, which moves every rate measured then, fleet and baseline alike.
    """
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        total = 0
        for i in range(SPEED_LOOP):
            total += i
        best = min(best, time.perf_counter() - started)
    return best * 1e3
