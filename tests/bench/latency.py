"""Idle latencies on one clock: publish -> task start, and task end -> the producer's ``get()`` returning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bench.harness import ROOT, Bench, read_stamp, run_script, worker
from tests.support.waiting import wait_until as wait_for

_PUBLISH = """
import sys, time, importlib
app = importlib.import_module(sys.argv[1]).celery_app
n, rate, out = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
lat = app.tasks['bench.latency']
lat.apply_async((time.time(), '/dev/null'), queue='booking', routing_key='booking.bench')  # warm up
time.sleep(0.5)
t0 = time.perf_counter()
for i in range(n):
    wait = t0 + i / rate - time.perf_counter()
    if wait > 0:
        time.sleep(wait)
    lat.apply_async((time.time(), out), queue='booking', routing_key='booking.bench')
"""


_WAIT = """
import importlib, json, sys, time
app = importlib.import_module(sys.argv[1]).celery_app
n = int(sys.argv[2])
finished = app.tasks['bench.finished']
finished.apply_async(queue='booking', routing_key='booking.bench').get(timeout=60)  # warm up
waits = []
for _ in range(n):
    ended = finished.apply_async(queue='booking', routing_key='booking.bench').get(timeout=60)
    waits.append(time.time() - ended)
print(json.dumps(waits))
"""


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def measure_latency(bench: Bench, app: str, argv: list[str], n: int, rate: float) -> dict[str, float]:
    """Run ``n`` latency probes at ``rate``/s through an idle worker; return p50/p99 in ms."""
    bench.reset()
    out = bench.tmp / f"latency-{app.rsplit('.', 1)[-1]}"
    out.mkdir(exist_ok=True)
    for old in out.glob("lat-*.txt"):
        old.unlink()
    ready = bench.tmp / "ready"
    ready.unlink(missing_ok=True)
    with worker(bench, argv, ready):
        read_stamp(wait_for(lambda: ready.exists() and ready, 120, "worker ready"))
        subprocess.run(
            [sys.executable, "-c", _PUBLISH, app, str(n), str(rate), str(out)],
            cwd=ROOT,
            env=bench.env(),
            check=True,
            timeout=600,
        )
        wait_for(lambda: _count(out) >= n, 60, f"{n} latency samples")
    samples = [float(x) * 1000 for f in out.glob("lat-*.txt") for x in Path(f).read_text().split()]
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "max": max(samples)}


def _count(out: Path) -> int:
    return sum(len(f.read_text().split()) for f in out.glob("lat-*.txt"))


def measure_result_wait(bench: Bench, app: str, argv: list[str], n: int) -> dict[str, float]:
    """Run ``n`` tasks one by one, each awaited with ``get()``; p50/p99/max in ms from task end to return.

    The producer waits as the seed's producers do (``result.get()``, default interval).
    """
    bench.reset()
    ready = bench.tmp / "ready"
    ready.unlink(missing_ok=True)
    with worker(bench, argv, ready):
        read_stamp(wait_for(lambda: ready.exists() and ready, 120, "worker ready"))
        printed = run_script(bench, _WAIT, app, str(n))
    samples = [float(x) * 1000 for x in json.loads(printed.strip().splitlines()[-1])]
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "max": max(samples)}
