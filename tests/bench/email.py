"""Email drain: N emails through a real email worker to an SMTP server that holds each one.

The queue is filled first, then the worker starts; the rate is N / (last email
accepted by the server - worker ready). The fleet runs its ``email`` profile
(gevent, pooled aiosmtplib connections, idempotency ledger, PostgreSQL results);
plain Celery runs the same pool, concurrency and prefetch with the stock
database result backend and one smtplib connection per mail.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.bench.cpu import cpu_since, snapshot
from tests.bench.harness import ROOT, Bench, Drain, read_stamp, worker
from tests.support.ports import free_port
from tests.support.processes import peak_rss_kib
from tests.support.waiting import wait_until as wait_for

#: Seconds the bench SMTP server holds each message.
SMTP_DELAY = 0.2

_FILL = """
import sys
from tests.bench.plain_app import celery_app as app
n, kind, host, port = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
with app.producer_or_acquire() as producer:
    for i in range(n):
        if kind == 'fleet':
            app.send_task('app.tasks.email_tasks.send_welcome_email', queue='email',
                          routing_key='email.send_welcome_email', producer=producer,
                          kwargs={'user_email': f'user{i}@example.com', 'user_name': f'User {i}'})
        else:
            app.send_task('bench.plain_email', args=(i, host, port), queue='email',
                          routing_key='email.bench', producer=producer)
"""


def _accepted(stats: Path) -> tuple[int, float]:
    """(emails accepted, time.time() of the last) from the SMTP server's stats file."""
    if not stats.exists():
        return 0, 0.0
    count, last, _ = stats.read_text().split()
    return int(count), float(last)


def measure_email(bench: Bench, argv: list[str], n: int, *, table: str, **env: str) -> Drain:
    """Fill ``email`` with ``n`` emails, start the worker, time until the server accepted all."""
    bench.reset()
    ready, stats = bench.tmp / "ready", bench.tmp / "smtp-stats"
    for stamp in (ready, stats):
        stamp.unlink(missing_ok=True)
    port = free_port()
    server_argv = ["-m", "tests.support.smtp_server", "--port", str(port), "--delay", str(SMTP_DELAY)]
    server = subprocess.Popen(
        [sys.executable, *server_argv, "--stats", str(stats)],
        cwd=ROOT,
        env=bench.env(),
    )
    try:
        kind = "fleet" if table == "task_results" else "plain"
        subprocess.run(
            [sys.executable, "-c", _FILL, str(n), kind, "127.0.0.1", str(port)],
            cwd=ROOT,
            env=bench.env(),
            check=True,
            timeout=600,
        )
        wait_for(lambda: bench.depth("email")[0] >= n, 120, f"{n} messages on email")
        smtp_env = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), **env}
        with worker(bench, argv, ready, **smtp_env) as proc:
            started = read_stamp(wait_for(lambda: ready.exists() and ready, 120, "worker ready", 0.01))
            before = snapshot()
            wait_for(lambda: _accepted(stats)[0] >= n, 900, f"{n} emails at the SMTP server", 0.05)
            finished = _accepted(stats)[1]
            used = cpu_since(before, proc.pid)
            peak = max(peak_rss_kib(proc.pid).values(), default=0)
            # results are written right after each send: wait for the last ones
            rows = wait_for(
                lambda: bench.result_rows(table) >= n and bench.result_rows(table), 120, "results"
            )
    finally:
        server.terminate()
        server.wait(30)
    return Drain(n=n, seconds=finished - started, rows=rows, peak_rss_kib=peak, unit="emails", cpu=used)
