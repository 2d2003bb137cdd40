"""Email drain: N emails through a real email worker to an SMTP server that holds each one.

The queue is filled first, then the worker starts; the rate is N / (last email
accepted by the server - worker ready). The fleet runs its ``email`` profile
(gevent, pooled aiosmtplib connections, idempotency ledger, PostgreSQL results);
plain Celery runs the same pool, concurrency and prefetch with the stock
database result backend and one smtplib connection per mail. The ceiling
both are held against is measured, not computed: aiosmtplib alone sending the
same number of emails to the same server over as many open connections as the
email worker holds messages.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.bench.cpu import cpu_since, snapshot
from tests.bench.harness import ROOT, Bench, Drain, read_stamp, run_script, worker
from tests.bench.results import TableResults, check_results
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
            r = app.send_task('app.tasks.email_tasks.send_welcome_email', queue='email',
                              routing_key='email.send_welcome_email', producer=producer,
                              kwargs={'user_email': f'user{i}@example.com', 'user_name': f'User {i}'})
        else:
            r = app.send_task('bench.plain_email', args=(i, host, port), queue='email',
                              routing_key='email.bench', producer=producer)
        print(r.id)
"""


def _accepted(stats: Path) -> tuple[int, float]:
    """(emails accepted, time.time() of the last) from the SMTP server's stats file."""
    if not stats.exists():
        return 0, 0.0
    count, last, _ = stats.read_text().split()
    return int(count), float(last)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@contextmanager
def smtp_server(bench: Bench) -> Iterator[tuple[int, Path]]:
    """Run the bench SMTP server (each message held ``SMTP_DELAY`` s); yield its port and stats file."""
    stats = bench.tmp / "smtp-stats"
    stats.unlink(missing_ok=True)
    port = free_port()
    server_argv = ["-m", "tests.support.smtp_server", "--port", str(port), "--delay", str(SMTP_DELAY)]
    server = subprocess.Popen(
        [sys.executable, *server_argv, "--stats", str(stats)], cwd=ROOT, env=bench.env()
    )
    try:
        wait_for(lambda: _listening(port), 30, f"the SMTP server on port {port}", 0.05)
        yield port, stats
    finally:
        server.terminate()
        server.wait(30)


def measure_email(bench: Bench, argv: list[str], n: int, *, table: str, **env: str) -> Drain:
    """Fill ``email`` with ``n`` emails, start the worker, time until the server accepted all.

    Raises:
        ResultsMismatch: once the worker has stopped, the results are not exactly one per email.
    """
    bench.reset()
    ready = bench.tmp / "ready"
    ready.unlink(missing_ok=True)
    with smtp_server(bench) as (port, stats):
        kind = "fleet" if table == "task_results" else "plain"
        tasks = run_script(bench, _FILL, str(n), kind, "127.0.0.1", str(port)).split()
        wait_for(lambda: bench.depth("email")[0] >= n, 120, f"{n} messages on email")
        smtp_env = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), **env}
        with worker(bench, argv, ready, **smtp_env) as proc:
            started = read_stamp(wait_for(lambda: ready.exists() and ready, 120, "worker ready", 0.01))
            before = snapshot()
            wait_for(lambda: _accepted(stats)[0] >= n, 900, f"{n} emails at the SMTP server", 0.05)
            finished = _accepted(stats)[1]
            used = cpu_since(before, proc.pid)
            peak = max(peak_rss_kib(proc.pid).values(), default=0)
    # the worker stopped warm, so each task that sent its email also stored its result
    rows = check_results(TableResults(bench.engine(), table), tasks, f"{' '.join(argv)} (emails)")
    return Drain(n=n, seconds=finished - started, rows=rows, peak_rss_kib=peak, unit="emails", cpu=used)


_RAW_SEND = """
import asyncio, sys, time
from email.message import EmailMessage
import aiosmtplib
n, connections, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

async def sender(todo):
    async with aiosmtplib.SMTP(hostname='127.0.0.1', port=port, local_hostname='bench') as smtp:
        while not todo.empty():
            i = todo.get_nowait()
            message = EmailMessage()
            message['From'] = 'Magnetiq <no-reply@magnetiq.local>'
            message['To'] = f'user{i}@example.com'
            message['Subject'] = f'Welcome to Magnetiq, User {i}!'
            message.set_content(f'Hello User {i}, welcome to Magnetiq!')
            await smtp.send_message(message)

async def main():
    todo = asyncio.Queue()
    for i in range(n):
        todo.put_nowait(i)
    print(time.time())
    await asyncio.gather(*(sender(todo) for _ in range(connections)))

asyncio.run(main())
"""


def measure_smtp_ceiling(bench: Bench, n: int, connections: int) -> float:
    """Send ``n`` emails straight from aiosmtplib over ``connections`` open connections; return emails/s.

    No Celery, broker or result store: what the SMTP server and the client
    library reach with as many messages in flight as the email worker holds.
    """
    with smtp_server(bench) as (port, stats):
        out = subprocess.run(
            [sys.executable, "-c", _RAW_SEND, str(n), str(connections), str(port)],
            cwd=ROOT,
            env=bench.env(),
            check=True,
            timeout=600,
            stdout=subprocess.PIPE,
            text=True,
        )
        started = float(out.stdout.split()[0])
        wait_for(lambda: _accepted(stats)[0] >= n, 60, f"{n} emails at the SMTP server", 0.05)
        finished = _accepted(stats)[1]
    return n / (finished - started)
