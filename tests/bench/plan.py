"""What the bench measures: every measurement, how each worker is started, and the table's figures.

Every baseline runs as its users run it: plain Celery and the seed's setup
start with the seed's command line (``celery -A ... worker --loglevel=info``),
and the fleet's workers with their profile at the log level the fleet deploys
with. A variant that is slower for an incidental reason (a quiet start) is an
extra row without a target, never the headline. No baseline is a constant:
each is measured in the same run as the fleet.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from app.settings import Settings
from tests.bench.booking_flow import Flow, measure_booking_flow
from tests.bench.email import SMTP_DELAY, measure_email, measure_smtp_ceiling
from tests.bench.harness import Bench, Drain, measure_drain
from tests.bench.lanes import measure_lane
from tests.bench.latency import measure_latency, measure_result_wait
from tests.bench.loop_lag import Lag, measure_loop_lag
from tests.bench.publish import measure_publish
from tests.bench.store import measure_store
from tests.support.ports import free_port
from workers.profiles import BOOKING, BULK, EMAIL

FLEET = "tests.bench.fleet_app"
PLAIN = "tests.bench.plain_app"
SEED = "tests.bench.seed_app"
CORES = os.cpu_count() or 1
#: The level the fleet's workers log at as deployed (``LOG_LEVEL``'s default, as in deploy/).
FLEET_LOGLEVEL = str(Settings.model_fields["log_level"].default)

#: Task counts per measurement: about five seconds of draining each on two cores.
SIZES = {
    "full": {
        "fleet": 5000,
        "plain": 2000,
        "plain_quiet": 1000,
        "seed": 5000,
        "fleet_redis": 5000,
        "gevent": 3000,
        "gevent_plain": 300,
        "publish": 20000,
        "latency": 1000,
        "result_wait": 200,
        "result_wait_plain": 40,
        "booking_flow": 2000,
        "store": 5000,
        "email": 3000,
        "email_plain": 300,
        "loop_lag": 2000,
        "loop_lag_requests": 50,
        "lanes": 10000,
    },
    "quick": {
        "fleet": 40,
        "plain": 20,
        "plain_quiet": 20,
        "seed": 40,
        "fleet_redis": 40,
        "gevent": 40,
        "gevent_plain": 10,
        "publish": 200,
        "latency": 20,
        "result_wait": 5,
        "result_wait_plain": 3,
        "booking_flow": 20,
        "store": 20,
        "email": 40,
        "email_plain": 10,
        "loop_lag": 20,
        "loop_lag_requests": 5,
        "lanes": 40,
    },
}


def plain_argv(pool: str, concurrency: int, prefetch: int, queue: str, quiet: bool = False) -> list[str]:
    """Plain Celery on the fleet's queue shape: the seed's command line plus pool, concurrency and prefetch.

    ``quiet`` starts it as the reference measurements did (``celery -q``, log
    level WARNING). That start is slower for an incidental reason: without the
    banner the stock database backend is first built in each prefork child,
    not inherited from the parent marked as forked, and opens a new PostgreSQL
    connection per result.
    """
    start = (
        ["-q", "-A", PLAIN, "worker", "--loglevel=WARNING"]
        if quiet
        else ["-A", PLAIN, "worker", "--loglevel=info"]
    )
    shape = ["-Q", queue, "-P", pool, "-c", str(concurrency), "--prefetch-multiplier", str(prefetch)]
    return [*start, *shape, *(["--without-gossip"] if quiet else [])]


def plain_booking_argv(quiet: bool = False) -> list[str]:
    """Plain Celery in the booking profile's shape: prefork, its concurrency and prefetch, late acks."""
    return plain_argv(
        "prefork", BOOKING.effective_concurrency, BOOKING.prefetch_multiplier, "booking", quiet=quiet
    )


def seed_argv() -> list[str]:
    """The seed's worker command line: prefork, one process per core, Celery's defaults otherwise."""
    return ["-A", SEED, "worker", "--loglevel=info"]


def fleet_argv(profile: str) -> list[str]:
    """The fleet profile's own worker arguments, on the bench app, at its deployed log level."""
    return {"booking": BOOKING, "email": EMAIL, "bulk": BULK}[profile].argv(
        app=FLEET, loglevel=FLEET_LOGLEVEL
    )


Measure = Callable[[Bench], "float | Drain | Flow | Lag"]
#: The fleet's booking profile with the seed's Redis as its broker (``CELERY_BROKER_URL=redis://``).
_FLEET_REDIS = "fleet booking on Redis, results in PostgreSQL"
#: ... and with ``CELERY_RESULT_BACKEND=redis://`` too: the seed's two URLs.
_FLEET_REDIS_RESULTS = "fleet booking on Redis, results in Redis"
#: The measurement behind the booking-flow rows (no baseline: an absolute figure).
BOOKING_FLOW = "fleet booking flow"


def drains(size: dict[str, int]) -> dict[str, Measure]:
    """The no-op drains: the fleet's booking and gevent workers, plain Celery, the seed's setup."""
    fleet, plain_booking = fleet_argv("booking"), plain_booking_argv()
    quiet_booking = plain_booking_argv(quiet=True)

    def fleet_booking(
        ignore_result: bool = False, metrics: bool = True, log_each_task: bool = False
    ) -> Measure:
        return lambda b: measure_drain(
            b,
            fleet,
            b.rabbit(FLEET, "booking", "task_results"),
            size["fleet"],
            ignore_result=ignore_result,
            METRICS_PORT=str(free_port()) if metrics else "0",
            LOG_EACH_TASK=str(log_each_task).lower(),
        )

    def plain(argv: list[str], queue: str, n: int) -> Measure:
        return lambda b: measure_drain(b, argv, b.rabbit(PLAIN, queue, "plain_celery_taskmeta"), n)

    def fleet_on_redis(results_in_redis: bool) -> Measure:
        return lambda b: measure_drain(
            b,
            fleet,
            b.fleet_on_redis(FLEET, results_in_redis),
            size["fleet_redis"],
            METRICS_PORT=str(free_port()),
        )

    def seed(ignore_result: bool) -> Measure:
        return lambda b: measure_drain(b, seed_argv(), b.seed(), size["seed"], ignore_result=ignore_result)

    return {
        "fleet booking, results, metrics on": fleet_booking(),
        "fleet booking, results, metrics off": fleet_booking(metrics=False),
        "fleet booking, results ignored": fleet_booking(ignore_result=True),
        "fleet booking, results, each task logged": fleet_booking(log_each_task=True),
        "plain booking, stock db backend": plain(plain_booking, "booking", size["plain"]),
        "plain booking, stock db, quiet start": plain(quiet_booking, "booking", size["plain_quiet"]),
        "seed setup, Redis broker and results": seed(ignore_result=False),
        "seed setup, Redis, results ignored": seed(ignore_result=True),
        _FLEET_REDIS: fleet_on_redis(results_in_redis=False),
        _FLEET_REDIS_RESULTS: fleet_on_redis(results_in_redis=True),
        "fleet gevent, results": lambda b: measure_drain(
            b,
            fleet_argv("email"),
            b.rabbit(FLEET, "email", "task_results"),
            size["gevent"],
            METRICS_PORT=str(free_port()),
        ),
        "plain gevent, stock db backend": plain(
            plain_argv("gevent", 100, 4, "email"), "email", size["gevent_plain"]
        ),
    }


def measurements(size: dict[str, int]) -> dict[str, Measure]:
    """Every distinct measurement, by name (each runs once per repetition)."""
    fleet_booking = fleet_argv("booking")
    plain_booking = plain_booking_argv()
    return {
        **drains(size),
        "fleet email, results": lambda b: measure_email(
            b, fleet_argv("email"), size["email"], table="task_results", METRICS_PORT=str(free_port())
        ),
        "raw aiosmtplib, same connections": lambda b: measure_smtp_ceiling(
            b, size["email"], EMAIL.effective_concurrency
        ),
        "plain email, stock db backend": lambda b: measure_email(
            b, plain_argv("gevent", 100, 4, "email"), size["email_plain"], table="plain_celery_taskmeta"
        ),
        "fleet bulk publish": lambda b: measure_publish(b, size["publish"], "bulk"),
        "apply_async + confirm_publish": lambda b: measure_publish(b, size["publish"], "apply_async"),
        "raw py-amqp streamed confirms": lambda b: measure_publish(b, size["publish"], "raw"),
        "fleet latency p99": lambda b: measure_latency(b, FLEET, fleet_booking, size["latency"], 200)["p99"],
        "plain latency p99": lambda b: measure_latency(b, PLAIN, plain_booking, size["latency"], 200)["p99"],
        "fleet result wait p50": lambda b: measure_result_wait(b, FLEET, fleet_booking, size["result_wait"])[
            "p50"
        ],
        "fleet result wait p99": lambda b: measure_result_wait(b, FLEET, fleet_booking, size["result_wait"])[
            "p99"
        ],
        "plain result wait p50": lambda b: measure_result_wait(
            b, PLAIN, plain_booking, size["result_wait_plain"]
        )["p50"],
        "plain result wait p99": lambda b: measure_result_wait(
            b, PLAIN, plain_booking, size["result_wait_plain"]
        )["p99"],
        BOOKING_FLOW: lambda b: measure_booking_flow(
            b, fleet_booking, size["booking_flow"], BOOKING.effective_concurrency
        ),
        "fleet result store": lambda b: measure_store(b, "fleet", size["store"]),
        "fleet result store through PgBouncer": lambda b: measure_store(b, "fleet-pgbouncer", size["store"]),
        "raw psycopg2 upsert": lambda b: measure_store(b, "raw", size["store"]),
        "raw psycopg2 upsert, async commit": lambda b: measure_store(b, "raw-async", size["store"]),
        **loop_lags(size),
        **lanes(size),
    }


#: The lane measurements: the fleet as it ships, and the same fleet with one lane for all email.
OWN_LANE = "fleet reset behind reminders, own lane"
ONE_LANE = "fleet reset behind reminders, one lane"


def lanes(size: dict[str, int]) -> dict[str, Measure]:
    """A password reset published behind queued reminders: in their own lane (``bulk``), then in ``email``."""
    email, bulk = fleet_argv("email"), fleet_argv("bulk")
    return {
        OWN_LANE: lambda b: measure_lane(b, {"email": email, "bulk": bulk}, size["lanes"], "bulk"),
        ONE_LANE: lambda b: measure_lane(b, {"email": email}, size["lanes"], "email"),
    }


def loop_lags(size: dict[str, int]) -> dict[str, Measure]:
    """An event loop's lag while its coroutines publish: the fleet's ``aio`` helpers, then ``.delay()``."""
    n, requests = size["loop_lag"], size["loop_lag_requests"]
    return {
        "fleet loop lag p99, aio publish": lambda b: measure_loop_lag(
            b, "fleet", b.rabbit(FLEET, "booking", "task_results"), n, requests
        ),
        "plain loop lag p99, .delay() + confirms": lambda b: measure_loop_lag(
            b, PLAIN, b.rabbit(PLAIN, "booking", "plain_celery_taskmeta"), n, requests, BENCH_CONFIRM="1"
        ),
        "seed loop lag p99, .delay() on Redis": lambda b: measure_loop_lag(b, SEED, b.seed(), n, requests),
    }


@dataclass(frozen=True)
class Figure:
    """One row of the table: the fleet against a baseline, with the target ratio."""

    name: str
    fleet: str
    baseline: str
    #: None: shown for information, no target.
    target: float | None
    unit: str = "tasks/s"
    #: Latency: lower is better, the ratio must stay at or below the target.
    at_most: bool = False
    #: A bound on the fleet's own value, in ``unit`` (at most or at least it, as ``at_most`` says),
    #: for a figure whose requirement is absolute; None: the ratio's target alone.
    limit: float | None = None
    #: Which field of the two measurements' samples is compared (a drain's ``peak_mib``, ...).
    field: str = "value"


_BOOKING = "booking drain, results stored, prefork"
_EMAIL = "email drain, 0.2 s SMTP, results stored"
_PUBLISH = "bulk publish with confirms"
_STORE = "result store, one process, one commit per result"
_FLEET = "fleet booking, results, metrics on"
_WAIT = "result wait, task end -> get() returns"
_LAG = "event-loop lag while publishing, p99"
#: The loop lag an ``async def`` service may see while it publishes (what `app.producer.aio` promises).
LOOP_LAG_LIMIT_MS = 5.0
#: From publishing a password reset behind 10,000 queued reminders to its result, in ms (the lanes' promise).
LANE_LIMIT_MS = 2000.0
#: From a task's end to ``get()`` returning, p50 and p99, in ms (what the LISTEN wait promises).
RESULT_WAIT_LIMITS_MS = (5.0, 20.0)
#: Peak resident size of any one worker process during a booking drain, in MiB.
RSS_LIMIT_MIB = 100.0
#: A booking worker's main-process CPU per task, in us: half the 500 us it took when it was set.
MAIN_CPU_LIMIT_US = 250.0
#: The email drain's floor: nine tenths of what its greenlets allow at the bench's SMTP delay.
EMAIL_BOUND_SHARE = 0.9

FIGURES = (
    # The headline: plain Celery started as its users start it.
    Figure(_BOOKING, _FLEET, "plain booking, stock db backend", 3.0),
    Figure(_BOOKING, _FLEET, "seed setup, Redis broker and results", 1.5),
    # Slower for an incidental reason (a connection per result): information only.
    Figure(_BOOKING, _FLEET, "plain booking, stock db, quiet start", None),
    Figure(
        "booking drain, results ignored, prefork",
        "fleet booking, results ignored",
        "seed setup, Redis, results ignored",
        None,
    ),
    Figure("booking drain, results stored", _FLEET, "fleet booking, results ignored", 0.75),
    # A team moving off the seed's setup: the fleet on the same Redis, then with the same URLs.
    Figure(_BOOKING + ", Redis broker", _FLEET_REDIS, "seed setup, Redis broker and results", None),
    Figure(_BOOKING + ", Redis broker", _FLEET_REDIS_RESULTS, "seed setup, Redis broker and results", None),
    Figure(
        "no-op drain on gevent, results stored",
        "fleet gevent, results",
        "plain gevent, stock db backend",
        20.0,
    ),
    # The floor is 0.9 of the concurrency bound (100 greenlets / 0.2 s = 500 emails/s).
    Figure(
        _EMAIL,
        "fleet email, results",
        "raw aiosmtplib, same connections",
        0.6,
        unit="emails/s",
        limit=EMAIL_BOUND_SHARE * EMAIL.effective_concurrency / SMTP_DELAY,
    ),
    Figure(_EMAIL, "fleet email, results", "plain email, stock db backend", 1.0, unit="emails/s"),
    Figure(_PUBLISH, "fleet bulk publish", "apply_async + confirm_publish", 5.0),
    Figure(_PUBLISH, "fleet bulk publish", "raw py-amqp streamed confirms", 0.5),
    Figure(
        "idle latency publish -> task start, p99",
        "fleet latency p99",
        "plain latency p99",
        1.0,
        unit="ms",
        at_most=True,
    ),
    # The stock database backend's get() polls every 0.5 s; the fleet's wakes on NOTIFY.
    Figure(
        _WAIT + ", p50",
        "fleet result wait p50",
        "plain result wait p50",
        None,
        unit="ms",
        at_most=True,
        limit=RESULT_WAIT_LIMITS_MS[0],
    ),
    Figure(
        _WAIT + ", p99",
        "fleet result wait p99",
        "plain result wait p99",
        None,
        unit="ms",
        at_most=True,
        limit=RESULT_WAIT_LIMITS_MS[1],
    ),
    # A loop that calls .delay() waits out every publish of every request; the aio helpers, never.
    Figure(
        _LAG,
        "fleet loop lag p99, aio publish",
        "plain loop lag p99, .delay() + confirms",
        None,
        unit="ms",
        at_most=True,
        limit=LOOP_LAG_LIMIT_MS,
    ),
    Figure(
        _LAG,
        "fleet loop lag p99, aio publish",
        "seed loop lag p99, .delay() on Redis",
        None,
        unit="ms",
        at_most=True,
    ),
    # Reminders queued by the thousand: in their own lane a password reset does not wait for them.
    Figure(
        "password reset behind 10,000 queued reminders",
        OWN_LANE,
        ONE_LANE,
        None,
        unit="ms",
        at_most=True,
        limit=LANE_LIMIT_MS,
    ),
    Figure("throughput with metrics on", _FLEET, "fleet booking, results, metrics off", 0.97),
    # What one booking worker process holds, and what its main process spends per task.
    Figure(
        "peak RSS per worker process, booking drain",
        _FLEET,
        "seed setup, Redis broker and results",
        None,
        unit="MiB",
        at_most=True,
        limit=RSS_LIMIT_MIB,
        field="peak_mib",
    ),
    Figure(
        "worker main-process CPU per booking task",
        _FLEET,
        "seed setup, Redis broker and results",
        None,
        unit="us",
        at_most=True,
        limit=MAIN_CPU_LIMIT_US,
        field="cpu_us:worker main",
    ),
    # What Celery's line per task costs (LOG_EACH_TASK=true) against the default, without them.
    Figure("booking drain, each task logged", "fleet booking, results, each task logged", _FLEET, None),
    # Where a stored result's time goes: the backend's own overhead, then the WAL flush.
    Figure(_STORE, "fleet result store", "raw psycopg2 upsert", None, unit="results/s"),
    Figure(_STORE, "fleet result store", "raw psycopg2 upsert, async commit", None, unit="results/s"),
    # What a process behind a pooler in transaction mode pays: the hop, and plain statements.
    Figure(
        "result store behind PgBouncer (transaction mode)",
        "fleet result store through PgBouncer",
        "fleet result store",
        None,
        unit="results/s",
    ),
)
