"""``magnetiq schedule``: the periodic jobs with their last and next runs, and a run by hand."""

from __future__ import annotations

import getpass
import socket
from datetime import datetime

import click

from app.celery_app import celery_app
from app.db import engine_for
from app.maintenance import runs
from app.maintenance.schedule import Job, find_job, load_schedule
from app.settings import get_settings
from workers.beat import relay, send_slot
from workers.cli.connections import database_errors


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _jobs() -> tuple[Job, ...]:
    try:
        return load_schedule(get_settings().maintenance_schedule)
    except ValueError as exc:
        raise click.ClickException(f"MAINTENANCE_SCHEDULE: {exc}") from exc


@click.group()
def schedule() -> None:
    """Periodic maintenance jobs (times in UTC, on the database's clock)."""


@schedule.command("list")
def schedule_list() -> None:
    """List every job with its cron expression, last run and next run, and beat's leader."""
    settings = get_settings()
    jobs = _jobs()
    engine = engine_for(settings.database_url)
    with database_errors():
        lease = runs.read_lease(engine)
        last = runs.last_runs(engine)
    if lease.holder is None or lease.expires_at is None or lease.expires_at <= lease.now:
        click.echo("leader: none (no beat holds the lease)")
    else:
        click.echo(f"leader: {lease.holder} (lease until {_when(lease.expires_at)})")
    width = max(len(job.name) for job in jobs)
    click.echo(f"{'job':<{width}}  {'cron':<16} {'last run':<19} {'status':<10} {'next run':<19} task")
    for job in jobs:
        run = last.get(job.name)
        slot, status = (run.slot, run.status) if run is not None else (None, "never")
        click.echo(
            f"{job.name:<{width}}  {job.cron:<16} {_when(slot):<19} {status:<10} "
            f"{_when(job.next_slot(lease.now)):<19} {job.task}"
        )


@schedule.command("run")
@click.argument("job_name", metavar="JOB")
@click.option("--wait", type=float, default=None, help="Wait up to this many seconds for the result.")
def schedule_run(job_name: str, wait: float | None) -> None:
    """Send JOB's task once now, recorded as a run of its own (not one of the schedule's slots)."""
    settings = get_settings()
    jobs = _jobs()
    try:
        job = find_job(jobs, job_name)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="JOB") from exc
    engine = engine_for(settings.database_url)
    with database_errors():
        now = runs.read_lease(engine).now
        task_id = send_slot(engine, job, now, f"{getpass.getuser()}@{socket.gethostname()}", fenced=False)
        if task_id is not None:
            relay(engine, [job])
    if task_id is None:  # the same microsecond was run already
        raise click.ClickException(f"{job.name} already has a run at {now.isoformat()}; try again")
    click.echo(f"sent {job.name}: {job.task}[{task_id}] (run {now.isoformat()})")
    if wait is not None:
        result = celery_app.AsyncResult(task_id).get(timeout=wait)
        click.echo(f"result: {result}")
