"""Measurement primitives: fill a queue, start a worker, time its drain, read its memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kombu import Connection
from sqlalchemy import create_engine, text

from app.settings import sqlalchemy_url
from routing import declare_topology
from routing.topology import DEAD_LETTER_QUEUES, TASK_QUEUES
from tests.bench.cpu import CpuUse, cpu_since, snapshot
from tests.support.processes import peak_rss_kib
from tests.support.waiting import wait_until as wait_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Bench:
    """Where a bench run talks to and keeps its scratch files."""

    broker_url: str
    database_url: str
    tmp: Path
    log: Callable[[str], None] = print
    _engine: Any = field(default=None, repr=False)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for workers and publisher subprocesses."""
        env = dict(os.environ)
        env.update(
            CELERY_BROKER_URL=self.broker_url,
            DATABASE_URL=self.database_url,
            LOG_LEVEL="WARNING",
            METRICS_PORT="0",
            PYTHONPATH=str(ROOT),
        )
        env.pop("CELERY_RESULT_BACKEND", None)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(extra)
        return env

    def connection(self) -> Connection:
        """A fresh broker connection."""
        connection = Connection(self.broker_url, connect_timeout=5)
        connection.ensure_connection(max_retries=1, timeout=5)
        return connection

    def engine(self) -> Any:
        """A SQLAlchemy engine on the bench database."""
        if self._engine is None:
            self._engine = create_engine(sqlalchemy_url(self.database_url))
        return self._engine

    def reset(self) -> None:
        """Empty every queue and result table."""
        with self.connection() as connection:
            declare_topology(connection)
            with connection.channel() as channel:
                for queue in (*TASK_QUEUES, *DEAD_LETTER_QUEUES):
                    channel.queue_purge(queue.name)
        with self.engine().begin() as db:
            db.execute(text("TRUNCATE task_results, group_results, email_deliveries"))
            if db.execute(text("SELECT to_regclass('plain_celery_taskmeta')")).scalar():
                db.execute(text("TRUNCATE plain_celery_taskmeta"))

    def depth(self, queue: str) -> tuple[int, int]:
        """(ready, consumers) of a queue."""
        with self.connection() as connection, connection.channel() as channel:
            _, ready, consumers = channel.queue_declare(queue, passive=True)
        return ready, consumers

    def result_rows(self, table: str) -> int:
        """Rows in a result table."""
        with self.engine().connect() as db:
            if not db.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar():
                return 0
            return int(db.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def read_stamp(path: Path) -> float:
    """Read a timestamp file written by the bench probes."""
    return float(path.read_text())


def fill_queue(bench: Bench, n: int, queue: str, sentinel: Path, ignore_result: bool = False) -> None:
    """Publish ``n`` bench.noop tasks and one sentinel to ``queue`` in a subprocess."""
    script = (
        "import sys; from tests.bench.plain_app import celery_app as a\n"
        "n, q, s, ign = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == '1'\n"
        "rk = q + '.bench'\n"
        "with a.producer_or_acquire() as p:\n"
        "    for i in range(n):\n"
        "        a.send_task('bench.noop', args=(i,), queue=q, routing_key=rk, producer=p,\n"
        "                    ignore_result=ign)\n"
        "    a.send_task('bench.sentinel', args=(s,), queue=q, routing_key=rk, producer=p)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(n), queue, str(sentinel), "1" if ignore_result else "0"],
        cwd=ROOT,
        env=bench.env(),
        check=True,
        timeout=600,
    )
    wait_for(lambda: bench.depth(queue)[0] >= n + 1, 120, f"{n + 1} messages on {queue}")


@contextmanager
def worker(bench: Bench, argv: list[str], ready: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m celery <argv>`` until the block ends, then warm-stop it."""
    log_path = bench.tmp / f"worker-{len(list(bench.tmp.glob('worker-*.log')))}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", *argv],
            cwd=ROOT,
            env=bench.env(BENCH_READY_FILE=str(ready), **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    if proc.returncode not in (0, -signal.SIGTERM):
        bench.log(f"  worker exited {proc.returncode}; log: {log_path}")


@dataclass
class Drain:
    """One drain measurement."""

    n: int
    seconds: float
    rows: int
    peak_rss_kib: int
    #: What was drained: ``tasks`` (plus a sentinel) or ``emails`` (accepted by the SMTP server).
    unit: str = "tasks"
    #: CPU used from the worker's ready stamp to the end of the drain.
    cpu: CpuUse | None = None

    @property
    def rate(self) -> float:
        """Tasks per second."""
        return self.n / self.seconds


def measure_drain(
    bench: Bench, argv: list[str], queue: str, n: int, *, table: str, ignore_result: bool = False, **env: str
) -> Drain:
    """Fill ``queue`` with ``n`` no-op tasks, start the worker, time until the sentinel runs."""
    bench.reset()
    ready, done = bench.tmp / "ready", bench.tmp / "sentinel"
    for stamp in (ready, done):
        stamp.unlink(missing_ok=True)
    fill_queue(bench, n, queue, done, ignore_result=ignore_result)
    if (
        env.get("METRICS_PORT", "0") != "0"
        and "--pool" in argv
        and argv[argv.index("--pool") + 1] == "prefork"
    ):
        # as `python -m workers` does: children write samples the main process serves
        metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=bench.tmp))
        env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with worker(bench, argv, ready, **env) as proc:
        started = read_stamp(wait_for(lambda: ready.exists() and ready, 120, "worker ready", 0.01))
        before = snapshot()
        finished = read_stamp(wait_for(lambda: done.exists() and done, 900, "the sentinel task", 0.02))
        used = cpu_since(before, proc.pid)
        peak = max(peak_rss_kib(proc.pid).values(), default=0)
    rows = bench.result_rows(table)
    return Drain(n=n, seconds=finished - started, rows=rows, peak_rss_kib=peak, cpu=used)
