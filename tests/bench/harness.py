"""Measurement primitives: fill a queue, start a worker, time its drain, read its memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kombu import Connection
from sqlalchemy import create_engine, text

from app.settings import sqlalchemy_url
from routing import declare_topology
from routing.redis_transport import Transport
from routing.topology import DEAD_LETTER_QUEUES, TASK_QUEUES
from tests.bench.cpu import CpuUse, cpu_since, snapshot
from tests.bench.results import RedisResults, Results, TableResults, check_results
from tests.support.processes import peak_rss_kib
from tests.support.waiting import wait_until as wait_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Bench:
    """Where a bench run talks to and keeps its scratch files."""

    broker_url: str
    database_url: str
    #: A Redis database of the bench's own: the seed's broker and result backend.
    redis_url: str
    tmp: Path
    log: Callable[[str], None] = print
    _engine: Any = field(default=None, repr=False)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for workers and publisher subprocesses."""
        env = dict(os.environ)
        env.update(
            CELERY_BROKER_URL=self.broker_url,
            DATABASE_URL=self.database_url,
            BENCH_REDIS_URL=self.redis_url,
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

    def rabbit(self, app: str, queue: str, table: str) -> Target:
        """A drain on the bench vhost's ``queue``, published by ``app``, results in ``table``."""
        return Target(
            app=app,
            queue=queue,
            routing_key=f"{queue}.bench",
            results=TableResults(self.engine(), table),
            depth=lambda: self.depth(queue)[0],
        )

    def seed(self) -> Target:
        """A drain on the seed's setup: its default queue and its results, in the bench's Redis database."""
        results = RedisResults(self.redis_url)
        return Target(
            app="tests.bench.seed_app",
            queue="celery",
            routing_key=None,
            results=results,
            depth=lambda: results.depth("celery"),
            # Celery reads CELERY_BROKER_URL before the app's own broker argument.
            env={"CELERY_BROKER_URL": self.redis_url},
        )

    def fleet_on_redis(self, app: str, results_in_redis: bool) -> Target:
        """A drain of the fleet's booking queue with the bench's Redis database as its broker.

        Results go to PostgreSQL (the fleet's default) or, with
        ``results_in_redis``, to the same Redis database, as the seed keeps them.
        """
        redis_results = RedisResults(self.redis_url)
        env = {"CELERY_BROKER_URL": self.redis_url}
        if results_in_redis:
            env["CELERY_RESULT_BACKEND"] = self.redis_url
        return Target(
            app=app,
            queue="booking",
            routing_key="booking.bench",
            results=redis_results if results_in_redis else TableResults(self.engine(), "task_results"),
            depth=lambda: redis_results.depth("booking"),
            env=env,
            prepare=lambda: self.redis_topology(redis_results),
        )

    def redis_topology(self, database: RedisResults) -> None:
        """Empty the bench's Redis database and declare the fleet's topology on it, as workers do."""
        database.clear()
        with Connection(self.redis_url, transport=Transport, connect_timeout=5) as connection:
            declare_topology(connection)


@dataclass(frozen=True)
class Target:
    """What a drain publishes to and where its worker stores results."""

    #: Module whose ``celery_app`` publishes the tasks.
    app: str
    queue: str
    #: None: the queue's own (the seed publishes to its default queue as it is).
    routing_key: str | None
    results: Results
    #: Messages ready on ``queue``.
    depth: Callable[[], int]
    #: Environment for the publisher and the worker, over ``Bench.env``.
    env: Mapping[str, str] = field(default_factory=dict)
    #: Run before the queue is filled, after the results were cleared (a broker of its own to set up).
    prepare: Callable[[], None] | None = None


def read_stamp(path: Path) -> float:
    """Read a timestamp file written by the bench probes."""
    return float(path.read_text())


_FILL = """
import importlib, sys
a = importlib.import_module(sys.argv[1]).celery_app
n, q, rk, s, ign = int(sys.argv[2]), sys.argv[3], sys.argv[4] or None, sys.argv[5], sys.argv[6] == '1'
with a.producer_or_acquire() as p:
    for i in range(n):
        r = a.send_task('bench.noop', args=(i,), queue=q, routing_key=rk, producer=p, ignore_result=ign)
        print(r.id)
    print(a.send_task('bench.sentinel', args=(s,), queue=q, routing_key=rk, producer=p).id)
"""


def run_script(bench: Bench, script: str, *args: str, **env: str) -> str:
    """Run a Python ``script`` in a subprocess with the bench's environment; return what it printed."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=bench.env(**env),
        check=True,
        timeout=600,
        capture_output=True,
        text=True,
    ).stdout


def fill_queue(
    bench: Bench, target: Target, n: int, sentinel: Path, ignore_result: bool = False
) -> tuple[list[str], str]:
    """Publish ``n`` bench.noop tasks and one sentinel in a subprocess; return their task ids."""
    args = (target.app, str(n), target.queue, target.routing_key or "", str(sentinel))
    ids = run_script(bench, _FILL, *args, "1" if ignore_result else "0", **target.env).split()
    if len(ids) != n + 1:
        raise RuntimeError(f"bench: published {len(ids)} task ids for {n + 1} tasks")
    wait_for(lambda: target.depth() >= n + 1, 120, f"{n + 1} messages on {target.queue}")
    return ids[:-1], ids[-1]


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
    bench: Bench, argv: list[str], target: Target, n: int, *, ignore_result: bool = False, **env: str
) -> Drain:
    """Fill the queue with ``n`` no-op tasks, start the worker, time until the sentinel runs.

    Raises:
        ResultsMismatch: once the worker has stopped, the results are not
            exactly one per task (only the sentinel's when results are ignored).
    """
    bench.reset()
    target.results.clear()
    if target.prepare is not None:
        target.prepare()
    ready, done = bench.tmp / "ready", bench.tmp / "sentinel"
    for stamp in (ready, done):
        stamp.unlink(missing_ok=True)
    tasks, sentinel = fill_queue(bench, target, n, done, ignore_result=ignore_result)
    if (
        env.get("METRICS_PORT", "0") != "0"
        and "--pool" in argv
        and argv[argv.index("--pool") + 1] == "prefork"
    ):
        # as `python -m workers` does: children write samples the main process serves
        metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=bench.tmp))
        env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with worker(bench, argv, ready, **target.env, **env) as proc:
        started = read_stamp(wait_for(lambda: ready.exists() and ready, 120, "worker ready", 0.01))
        before = snapshot()
        finished = read_stamp(wait_for(lambda: done.exists() and done, 900, "the sentinel task", 0.02))
        used = cpu_since(before, proc.pid)
        peak = max(peak_rss_kib(proc.pid).values(), default=0)
    # the worker has stopped warm: every result it was going to store is stored
    expected = [sentinel] if ignore_result else [*tasks, sentinel]
    what = f"{' '.join(argv)} ({'results ignored' if ignore_result else 'results stored'})"
    rows = check_results(target.results, expected, what)
    return Drain(n=n, seconds=finished - started, rows=rows, peak_rss_kib=peak, cpu=used)
