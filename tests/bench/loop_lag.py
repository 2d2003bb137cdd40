"""Event-loop lag while an ``async def`` service publishes: the fleet's ``aio`` helpers against ``.delay()``.

One asyncio process runs a ticker that sleeps ``TICK`` seconds at a time and
records how late each wake-up fires, while ``requests`` concurrent coroutines
(the service's in-flight requests) publish ``n`` booking tasks between them,
each yielding to the loop once per request as a request arriving would. The
figure is the ticker's lateness: every other request on the loop waits that
long too.

- ``fleet``: ``await aio.enqueue_process_booking(...)``: validated, confirmed,
  published on the ``aio`` thread pool.
- a baseline app (``tests.bench.plain_app`` with ``confirm_publish``, or the
  seed's setup on Redis): ``process_booking.delay(...)`` called in the
  ``async def`` body, as the seed's endpoints do, so the loop waits for each
  publish (and its confirm) to return.

Each run first publishes one request per coroutine untimed (connections, threads),
then counts the messages on the queue and empties it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tests.bench.harness import Bench, Target, run_script
from tests.bench.latency import percentile
from tests.support.waiting import wait_until as wait_for

#: Seconds the ticker sleeps between wake-ups.
TICK = 0.001

_SCRIPT = """
import asyncio, importlib, json, sys, time
mode, n, requests, tick = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def booking(i):
    return (f'lag-{i}', i + 1, i + 1, 0)
if mode == 'fleet':
    from app.celery_app import celery_app as app
    from app.producer import aio
    async def publish(i):
        await aio.enqueue_process_booking(*booking(i))
else:
    from app.contracts import PROCESS_BOOKING
    app = importlib.import_module(mode).celery_app
    @app.task(name=PROCESS_BOOKING)
    def process_booking(reference, user_id, slot_id, amount_cents, currency='EUR'):
        pass
    async def publish(i):
        process_booking.delay(*booking(i))  # as the seed's endpoints do: on the loop, until it returns
async def request(first):
    for i in range(first, n, requests):
        await asyncio.sleep(0)  # the next request arrives
        await publish(i)
async def main():
    await asyncio.gather(*(publish(n + k) for k in range(requests)))  # warm up: connections, threads
    lags, done = [], asyncio.Event()
    async def ticker():
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(tick)
            lags.append(time.perf_counter() - before - tick)
    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.1)
    lags.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*(request(k) for k in range(requests)))
    seconds = time.perf_counter() - t0
    done.set()
    await ticking
    return {'lags': lags, 'seconds': seconds}
report = asyncio.run(main())
app.pool.force_close_all()
print(json.dumps(report))
"""


@dataclass(frozen=True)
class Lag:
    """How late the loop's ticker fired while ``n`` tasks were published (milliseconds)."""

    p50_ms: float
    p99_ms: float
    max_ms: float
    ticks: int
    n: int
    requests: int
    seconds: float

    @property
    def rate(self) -> float:
        """Tasks published per second meanwhile."""
        return self.n / self.seconds


def measure_loop_lag(bench: Bench, mode: str, target: Target, n: int, requests: int, **env: str) -> Lag:
    """Publish ``n`` booking tasks from ``requests`` coroutines on one loop; return how late its ticker fired.

    ``mode`` is ``fleet`` (the ``aio`` helpers) or the module of a baseline's app (``.delay()``).

    Raises:
        WaitTimeout: fewer messages than published reached ``target``'s queue.
    """
    bench.reset()
    target.results.clear()
    printed = run_script(bench, _SCRIPT, mode, str(n), str(requests), str(TICK), **target.env, **env)
    report = json.loads(printed.strip().splitlines()[-1])
    lags = [lag * 1000 for lag in report["lags"]] or [0.0]
    total = n + requests  # with the warm-up round
    wait_for(lambda: target.depth() >= total, 60, f"{total} messages on {target.queue}")
    bench.reset()  # purge what was published: nothing consumes it
    target.results.clear()
    return Lag(
        p50_ms=percentile(lags, 50),
        p99_ms=percentile(lags, 99),
        max_ms=max(lags),
        ticks=len(report["lags"]),
        n=n,
        requests=requests,
        seconds=report["seconds"],
    )
