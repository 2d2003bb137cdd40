"""Publish-rate figures: the fleet's bulk publisher, an apply_async loop, raw py-amqp."""

from __future__ import annotations

import subprocess
import sys

from tests.bench.harness import ROOT, Bench
from tests.support.waiting import wait_until as wait_for

#: Unconfirmed messages in flight for the raw py-amqp baseline (as in the anchors).
RAW_WINDOW = 1000

_APPLY_ASYNC = """
import sys, time
from tests.bench.plain_app import celery_app as app
n = int(sys.argv[1])
noop = app.tasks['bench.noop']
noop.apply_async((0,), queue='booking', routing_key='booking.bench')  # connect first
t0 = time.perf_counter()
for i in range(n):
    noop.apply_async((i,), queue='booking', routing_key='booking.bench')
print(time.perf_counter() - t0)
"""

_BULK = """
import sys, time
from app.contracts import PROCESS_PAYMENT
from app.producer import enqueue_many
n = int(sys.argv[1])
enqueue_many(PROCESS_PAYMENT, [{'payment_id': 1}])  # connect first
t0 = time.perf_counter()
enqueue_many(PROCESS_PAYMENT, ({'payment_id': i + 1} for i in range(n)))
print(time.perf_counter() - t0)
"""

_RAW = """
import sys, time, amqp
from kombu.utils.url import parse_url
n, window = int(sys.argv[1]), int(sys.argv[2])
u = parse_url(sys.argv[3])
conn = amqp.Connection(host=f"{u['hostname']}:{u['port'] or 5672}", userid=u['userid'],
                       password=u['password'], virtual_host=u['virtual_host'] or '/')
conn.connect()
ch = conn.channel()
ch.confirm_select()
state = {'acked': 0, 'nacked': 0, 'next': 1}
def on_ack(tag, multiple):
    state['acked'] = tag if multiple else state['acked'] + 1
def on_nack(tag, multiple):
    state['nacked'] += 1
ch.events['basic_ack'].add(on_ack)
ch.events['basic_nack'].add(on_nack)
body = b'x' * 200
t0 = time.perf_counter()
for i in range(n):
    while i - state['acked'] >= window:
        conn.drain_events(timeout=5)
    ch.basic_publish(amqp.Message(body, delivery_mode=2, content_type='application/octet-stream'),
                     exchange='magnetiq.tasks', routing_key='booking.bench')
while state['acked'] < n:
    conn.drain_events(timeout=5)
print(time.perf_counter() - t0)
conn.close()
"""


def _run(bench: Bench, script: str, *args: str, **env: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=bench.env(**env),
        check=True,
        timeout=900,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def measure_publish(bench: Bench, n: int, method: str) -> float:
    """Publish ``n`` tasks to the booking queue with ``method``; return tasks/s."""
    bench.reset()
    if method == "bulk":
        seconds = _run(bench, _BULK, str(n))
    elif method == "apply_async":
        seconds = _run(bench, _APPLY_ASYNC, str(n), BENCH_CONFIRM="1")
    elif method == "raw":
        seconds = _run(bench, _RAW, str(n), str(RAW_WINDOW), bench.broker_url)
    else:
        raise ValueError(method)
    # every method's messages must really be on the queue (plus warm-up messages)
    wait_for(lambda: bench.depth("booking")[0] >= n, 60, f"{n} messages on booking")
    return n / seconds
