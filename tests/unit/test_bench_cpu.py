"""The bench's CPU attribution: process trees, names, recycled pids and the machine's busy share."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tests.bench.cpu import HZ, Snapshot, cpu_since, cpu_use, snapshot
from tests.support.processes import descendants

WORKER = 100
#: A child that burns CPU, says so, then waits for its stdin to close.
BURN = "import sys\nx = 0\nfor i in range(3_000_000): x += i\nprint('done', flush=True)\nsys.stdin.read()"


def snap(ticks: dict[int, tuple[str, int]], busy: int = 0, total: int = 0) -> Snapshot:
    return Snapshot(ticks, busy, total)


def test_descendants_finds_grandchildren_and_nothing_else() -> None:
    # a child that starts a grandchild, reports its pid, and waits
    script = (
        "import subprocess, sys\n"
        "wait = 'import sys; sys.stdin.read()'\n"
        "g = subprocess.Popen([sys.executable, '-c', wait], stdin=subprocess.PIPE)\n"
        "print(g.pid, flush=True)\nsys.stdin.read()\ng.stdin.close()\ng.wait()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        assert descendants(os.getpid()) == [child.pid, grandchild]
        assert descendants(grandchild) == []
    finally:
        child.communicate("")


def test_ticks_are_attributed_to_the_worker_its_children_and_each_service() -> None:
    before = snap(
        {
            WORKER: ("celery", 10 * HZ),
            101: ("celery", 5 * HZ),
            300: ("beam.smp", 100 * HZ),
            400: ("postgres", 7 * HZ),
            500: ("sshd", 3 * HZ),
            600: ("redis-server", 1 * HZ),
        },
        busy=1000,
        total=4000,
    )
    after = snap(
        {
            WORKER: ("celery", 12 * HZ),
            101: ("celery", 8 * HZ),
            102: ("celery", 1 * HZ),  # started during the phase: counted in full
            300: ("beam.smp", 104 * HZ),
            400: ("postgres", 8 * HZ),
            401: ("postgres", 2 * HZ),  # a new server session
            500: ("sshd", 9 * HZ),  # not a group: ignored
            600: ("redis-server", 2 * HZ),  # the seed's broker and result store
        },
        busy=3000,
        total=8000,
    )
    use = cpu_use(before, after, WORKER, {101, 102})
    assert use.seconds == {
        "worker main": 2.0,
        "worker children": 4.0,
        "RabbitMQ": 4.0,
        "PostgreSQL": 3.0,
        "Redis": 1.0,
    }
    assert use.machine_busy == 0.5
    assert use.per_item_us(1000)["worker children"] == 4000.0


def test_a_pid_reused_by_another_program_counts_from_zero() -> None:
    before = snap({WORKER: ("celery", 0), 400: ("bash", 50 * HZ)})
    after = snap({WORKER: ("celery", 0), 400: ("postgres", 2 * HZ)})
    assert cpu_use(before, after, WORKER, set()).seconds["PostgreSQL"] == 2.0


@contextmanager
def burnt_cpu() -> Iterator[int]:
    """A child of this process that has burnt some CPU and is still alive: its pid."""
    child = subprocess.Popen(
        [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "done\n"
        yield child.pid
    finally:
        child.communicate("")


def test_a_real_child_burning_cpu_is_counted_under_the_worker_children() -> None:
    before = snapshot()
    with burnt_cpu() as child:
        after = snapshot()  # the child is still alive: its ticks are readable
        use = cpu_use(before, after, os.getpid(), set(descendants(os.getpid())))
    assert use.seconds["worker children"] >= after.ticks[child][1] / HZ > 0
    assert 0 < use.machine_busy <= 1


def test_cpu_since_reads_the_tree_and_the_ticks_now() -> None:
    before = snapshot()
    with burnt_cpu():
        use = cpu_since(before, os.getpid())
    assert use.seconds["worker children"] > 0
