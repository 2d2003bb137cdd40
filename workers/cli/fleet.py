"""``magnetiq status|publish|capacity``: what ops run against a live fleet."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from amqp.exceptions import ChannelError, NotFound
from celery.exceptions import QueueNotFound

from app import contracts
from app.celery_app import celery_app
from app.db import engine_for
from app.maintenance.dead_letters import is_redis
from app.producer import publish as publish_task
from app.producer import send
from app.settings import get_settings
from routing import names
from routing.routes import queue_for
from workers.cli import redis_queues
from workers.cli.capacity import BENCH_ASSUMPTIONS, bench_rate, measure, workers_needed
from workers.cli.connections import broker_connection, database_errors
from workers.cli.queue_stats import ManagementAPI, QueueStats, passive_counts, read_stats
from workers.profiles import PROFILES


def duration(seconds: float | None) -> str:
    """``95`` -> ``1m35s``; None -> ``-``."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s"
    hours, rest = divmod(whole, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


#: Seconds ``capacity`` waits for workers on Redis to say which queues they consume.
PING_SECONDS = 2.0
#: Column titles of ``magnetiq status``, aligned with ``status_line``.
STATUS_HEADER = f"{'queue':<12} {'ready':>7} {'unacked':>7} {'consumers':>9} {'dlq':>6} {'dlq oldest':>10}"


def status_line(stats: QueueStats) -> str:
    """One aligned row of ``magnetiq status``."""
    unacked = "?" if stats.unacked is None else str(stats.unacked)
    return (
        f"{stats.name:<12} {stats.ready:>7} {unacked:>7} {stats.consumers:>9} "
        f"{stats.dlq_ready:>6} {duration(stats.dlq_oldest_age):>10}"
    )


@click.command()
@click.option("--no-management", is_flag=True, help="Use AMQP only; do not ask the management API.")
@click.option("--ping-timeout", default=2.0, show_default=True, help="Seconds to wait for workers to answer.")
def status(no_management: bool, ping_timeout: float) -> None:
    """Per queue: ready, unacked, consumers, DLQ depth and oldest DLQ message; workers online."""
    settings = get_settings()
    api = None if no_management or settings.broker == "redis" else ManagementAPI.from_settings(settings)
    with broker_connection(settings) as connection:
        if is_redis(connection):
            stats, problem = redis_queues.read_stats(connection, ping_timeout), None
        else:
            try:
                stats, problem = read_stats(connection, api)
            except NotFound as exc:
                raise click.ClickException(f"{exc.reply_text}: run `magnetiq topology apply`") from exc
        replies = celery_app.control.ping(timeout=ping_timeout, connection=connection) or []
    click.echo(STATUS_HEADER)
    for row in stats:
        click.echo(status_line(row))
    if settings.broker == "redis":
        click.echo(
            "on Redis: unacked = held by workers (kombu's unacked hash); consumers = workers that answered"
        )
    elif api is None:
        click.echo("unacked unknown: management API not asked (--no-management)")
    elif problem:
        click.echo(f"unacked unknown: {problem}; enable rabbitmq_management or set RABBITMQ_MANAGEMENT_URL")
    nodes = sorted(node for reply in replies for node in reply)
    click.echo(f"workers online ({len(nodes)}): {', '.join(nodes) if nodes else 'none'}")


def _json_option(_: click.Context, __: click.Parameter, value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from exc


@click.command()
@click.argument("task_name")
@click.option(
    "--args", "args_", default="[]", callback=_json_option, help="Positional arguments, a JSON list."
)
@click.option("--kwargs", default="{}", callback=_json_option, help="Keyword arguments, a JSON object.")
@click.option("--countdown", type=float, help="Seconds to delay the task.")
@click.option("--wait", type=float, help="Wait up to this many seconds for the result and print it.")
def publish(task_name: str, args_: Any, kwargs: Any, countdown: float | None, wait: float | None) -> None:
    """Publish TASK_NAME by name with JSON arguments (validated for the fleet's own tasks)."""
    if not isinstance(args_, list) or not isinstance(kwargs, dict):
        raise click.BadParameter("--args must be a JSON list and --kwargs a JSON object")
    if queue_for(task_name) is None:
        raise click.ClickException(f"{task_name}: no route to a fleet queue (a typo?)")
    model = contracts.ARGUMENT_MODELS.get(task_name)
    if model is not None and args_:
        raise click.BadParameter(f"{task_name} takes keyword arguments only: use --kwargs")
    with broker_connection(get_settings()):
        pass  # reachable (or one clear line); publishing then takes the app's pool, as producers do
    try:
        if model is None:  # routed to a fleet queue, but not a task the fleet defines
            result = send(task_name, kwargs, args=args_, countdown=countdown)
        else:
            result = publish_task(task_name, model, kwargs, countdown=countdown)
    except (contracts.InvalidTaskArguments, ValueError, QueueNotFound) as exc:
        raise click.ClickException(str(exc)) from exc
    except ChannelError as exc:  # mandatory: no queue bound, so the broker returned it
        raise click.ClickException(
            f"{task_name} was not queued ({exc}): run `magnetiq topology apply`"
        ) from exc
    click.echo(f"published {task_name} id={result.id} queue={queue_for(task_name)}")
    if wait is not None:
        value = result.get(timeout=wait, propagate=False)
        click.echo(f"{result.status}: {value!r}")
        if result.status != "SUCCESS":
            raise SystemExit(1)


@click.command()
@click.argument("queue", type=click.Choice(names.WORK_QUEUES))
@click.option("--target", "target_rate", type=float, required=True, help="Tasks per second to sustain.")
@click.option("--window", default=15.0, show_default=True, help="Minutes of completions to measure.")
@click.option("--workers", type=int, help="Workers that ran in the window (default: consumers now).")
@click.option("--per-worker", type=float, help="Tasks/s one worker does (skip the measurement).")
@click.option(
    "--bench",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Take the rate per worker from a bench results file's last run (tests/bench/RESULTS.md).",
)
@click.option("--headroom", default=0.2, show_default=True, help="Spare capacity to plan for (0.2 = 20 %).")
def capacity(
    queue: str,
    target_rate: float,
    window: float,
    workers: int | None,
    per_worker: float | None,
    bench: Path | None,
    headroom: float,
) -> None:
    """Workers of QUEUE's profile needed for a target rate, from measured throughput.

    Throughput is measured from the result rows finished in the last --window
    minutes: completions from the first to the last, per worker. Measure while
    the queue has a backlog (workers busy), or the figure is a lower bound.
    --bench takes it from `make bench` instead, and prints what that assumes.
    """
    if bench is not None and per_worker is not None:
        raise click.UsageError("pass --per-worker or --bench, not both")
    if bench is not None:
        try:
            per_worker, source = bench_rate(bench.read_text(), queue)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"{queue}: {per_worker:,.1f} tasks/s per worker, the bench's {source!r} in {bench}")
        click.echo(f"{queue}: assumes {BENCH_ASSUMPTIONS[queue]}")
    settings = get_settings()
    with broker_connection(settings) as connection:
        if is_redis(connection):
            (row,) = [row for row in redis_queues.read_stats(connection, PING_SECONDS) if row.name == queue]
            ready, consumers = row.ready, row.consumers
        else:
            ready, consumers = passive_counts(connection, queue)
    if per_worker is None and settings.results_in_redis:
        raise click.ClickException(
            f"{queue}: throughput is measured from the result rows in PostgreSQL, and "
            "CELERY_RESULT_BACKEND names Redis: pass --per-worker"
        )
    if per_worker is None:
        since = datetime.now(UTC) - timedelta(minutes=window)
        default_queue = str(celery_app.conf.task_default_queue)
        with database_errors(settings.result_backend_url):
            measured = measure(
                engine_for(settings.result_backend_url), queue, since, lambda n: queue_for(n) or default_queue
            )
        running = workers or consumers
        if measured.per_second is None or not running:
            raise click.ClickException(
                f"{queue}: {measured.tasks} task(s) finished in the last {window:g} min "
                f"with {running} worker(s): nothing to measure; pass --per-worker"
            )
        per_worker = measured.per_second / running
        click.echo(
            f"{queue}: measured {measured.per_second:.2f} tasks/s over {measured.tasks} tasks "
            f"with {running} worker(s) = {per_worker:.2f} tasks/s per worker"
        )
        if not ready:
            click.echo(
                f"{queue}: no backlog now; if the workers were idle in the window, this is a lower bound"
            )
    needed = workers_needed(target_rate, per_worker, headroom)
    click.echo(
        f"{queue}: {needed} worker(s) of profile {_profile_of(queue)} for {target_rate:g} tasks/s "
        f"at {per_worker:.2f} tasks/s each with {headroom:.0%} headroom (consumers now: {consumers})"
    )


def _profile_of(queue: str) -> str:
    return next(profile.name for profile in PROFILES.values() if queue in profile.queues)
