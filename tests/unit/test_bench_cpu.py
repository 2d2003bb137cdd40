"""The bench's CPU attribution: process trees, names, recycled pids and the machine's busy share."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.bench.cpu import HZ, Snapshot, cpu_use, descendants, snapshot

WORKER = 100


def snap(ticks: dict[int, tuple[str, int, int]], busy: int = 0, total: int = 0) -> Snapshot:
    return Snapshot(ticks, busy, total)


def test_descendants_walks_the_whole_tree_and_nothing_else() -> None:
    ticks = {
        WORKER: ("celery", 1, 0),
        101: ("celery", WORKER, 0),
        102: ("celery", WORKER, 0),
        103: ("helper", 101, 0),  # a grandchild
        200: ("postgres", 1, 0),
        201: ("postgres", 200, 0),
    }
    assert descendants(ticks, WORKER) == {101, 102, 103}
    assert descendants(ticks, 103) == set()


def test_ticks_are_attributed_to_the_worker_its_children_rabbitmq_and_postgresql() -> None:
    before = snap(
        {
            WORKER: ("celery", 1, 10 * HZ),
            101: ("celery", WORKER, 5 * HZ),
            300: ("beam.smp", 1, 100 * HZ),
            400: ("postgres", 1, 7 * HZ),
            500: ("sshd", 1, 3 * HZ),
        },
        busy=1000,
        total=4000,
    )
    after = snap(
        {
            WORKER: ("celery", 1, 12 * HZ),
            101: ("celery", WORKER, 8 * HZ),
            102: ("celery", WORKER, 1 * HZ),  # started during the phase: counted in full
            300: ("beam.smp", 1, 104 * HZ),
            400: ("postgres", 1, 8 * HZ),
            401: ("postgres", 400, 2 * HZ),  # a new server session
            500: ("sshd", 1, 9 * HZ),  # not a group: ignored
        },
        busy=3000,
        total=8000,
    )
    use = cpu_use(before, after, WORKER)
    assert use.seconds == {"worker main": 2.0, "worker children": 4.0, "RabbitMQ": 4.0, "PostgreSQL": 3.0}
    assert use.machine_busy == 0.5
    assert use.per_item_us(1000)["worker children"] == 4000.0


def test_a_pid_reused_by_another_program_counts_from_zero() -> None:
    before = snap({WORKER: ("celery", 1, 0), 400: ("bash", 1, 50 * HZ)})
    after = snap({WORKER: ("celery", 1, 0), 400: ("postgres", 1, 2 * HZ)})
    assert cpu_use(before, after, WORKER).seconds["PostgreSQL"] == 2.0


def test_a_real_child_burning_cpu_is_counted_under_the_worker_children() -> None:
    burn = "import sys\nx = 0\nfor i in range(3_000_000): x += i\nprint('done', flush=True)\nsys.stdin.read()"
    before = snapshot()
    child = subprocess.Popen(
        [sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "done\n"
        after = snapshot()  # the child is still alive: its ticks are readable
    finally:
        child.communicate("")
    assert after.ticks[child.pid][1] == os.getpid()
    use = cpu_use(before, after, os.getpid())
    assert use.seconds["worker children"] >= after.ticks[child.pid][2] / HZ > 0
    assert 0 < use.machine_busy <= 1
