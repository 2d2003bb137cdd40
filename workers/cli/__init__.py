"""``magnetiq``: the fleet's command line for set-up and local runs."""

from __future__ import annotations

import mailbox
import os
import signal
import sys
import threading
from pathlib import Path

import click
from kombu import Connection

from app.db import engine_for
from app.mail.emails import SAMPLES
from app.mail.preview import write_preview
from app.maintenance.dead_letters import is_redis
from app.migrate import upgrade
from app.outbox import BATCH, POLL_INTERVAL, relay, relay_once
from app.settings import get_settings, mask_url
from routing import declare_topology
from routing.topology import DEAD_LETTER_QUEUES, TASK_QUEUES
from workers.cli import fleet, redis_queues
from workers.cli.connections import broker_connection, database_errors
from workers.cli.dlq import dlq
from workers.cli.schedule import schedule
from workers.cli.task import task
from workers.profiles import PROFILES


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate the Magnetiq task fleet (settings come from the environment)."""


@main.group()
def db() -> None:
    """Database set-up."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create the database if missing and apply every migration."""
    settings = get_settings()
    with database_errors():
        upgrade(settings.database_url)
    click.echo(f"database {mask_url(settings.database_url)} is at the newest migration")


@main.group()
def topology() -> None:
    """The broker's exchanges, queues and dead-letter queues."""


@topology.command("apply")
def topology_apply() -> None:
    """Declare every exchange and queue (idempotent)."""
    with broker_connection(get_settings()) as connection:
        declared = declare_topology(connection)
    click.echo(f"declared {len(declared)} entities: {', '.join(declared)}")


def passive_check(connection: Connection) -> list[str]:
    """Passively declare every queue on RabbitMQ, a line each; return the missing ones."""
    missing = []
    for queue in (*TASK_QUEUES, *DEAD_LETTER_QUEUES):
        try:
            with connection.channel() as channel:
                _, ready, consumers = channel.queue_declare(queue.name, passive=True)  # type: ignore[attr-defined]
            click.echo(f"ok      {queue.name:<16} ready={ready:<6} consumers={consumers}")
        except Exception as exc:
            missing.append(queue.name)
            click.echo(f"MISSING {queue.name:<16} {exc}")
    return missing


@topology.command("check")
def topology_check() -> None:
    """Check every queue: declared with its arguments on RabbitMQ, bound on Redis."""
    with broker_connection(get_settings()) as connection:
        check = redis_queues.check_topology if is_redis(connection) else passive_check
        missing = check(connection)
    if missing:
        raise click.ClickException(f"{len(missing)} queue(s) missing: run `magnetiq topology apply`")


@main.group()
def mail() -> None:
    """Email templates."""


@mail.command("preview")
@click.argument("templates", nargs=-1, type=click.Choice(sorted(SAMPLES)))
@click.option(
    "--out",
    default="var/mail/preview",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory the preview files are written to.",
)
def mail_preview(templates: tuple[str, ...], out: Path) -> None:
    """Render TEMPLATES (default: every one) with sample data to .eml, .html and .txt files."""
    mail_from = get_settings().mail_from
    for template in templates or tuple(SAMPLES):
        for path in write_preview(template, out, mail_from):
            click.echo(str(path))


@main.group()
def outbox() -> None:
    """The transactional outbox (tasks written in a producer's transaction)."""


@outbox.command("relay")
@click.option("--once", is_flag=True, help="Publish what is waiting now, then exit.")
@click.option("--batch", default=BATCH, show_default=True, help="Rows locked and published per transaction.")
@click.option("--interval", default=POLL_INTERVAL, show_default=True, help="Seconds between polls when idle.")
def outbox_relay(once: bool, batch: int, interval: float) -> None:
    """Publish committed outbox rows with publisher confirms; SIGTERM or Ctrl-C stops it."""
    engine = engine_for(get_settings().database_url)
    if once:
        click.echo(f"relayed {relay_once(engine, batch)} tasks")
        return
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(f"outbox relay: publishing committed tasks from {mask_url(get_settings().database_url)}")
    relay(engine, stop, batch, interval)


@main.command()
@click.option("--no-beat", is_flag=True, help="Do not run the beat scheduler.")
@click.option(
    "--mail-dir",
    default="var/mail",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the local SMTP sink writes received mail (when SMTP_HOST is unset).",
)
def run(no_beat: bool, mail_dir: Path) -> None:
    """Set up and run the whole fleet in the foreground (Ctrl-C stops it).

    Migrates the database, declares the topology, then runs the email,
    booking and maintenance workers and beat under one process runner. When
    SMTP_HOST is not set, a local SMTP sink on 127.0.0.1:1025 keeps every mail
    as a file under --mail-dir.
    """
    from honcho import manager as honcho

    settings = get_settings()
    ctx = click.get_current_context()
    ctx.invoke(db_upgrade)
    ctx.invoke(topology_apply)
    # Warm shutdown lets running tasks finish; give it longer than honcho's 5 s.
    honcho.KILL_WAIT = 30
    runner = honcho.Manager()
    env = dict(os.environ)
    if settings.smtp_host is None:
        mail_dir.parent.mkdir(parents=True, exist_ok=True)
        mailbox.Maildir(mail_dir, create=True)  # tmp/, new/, cur/ for the sink
        runner.add_process(
            "smtp",
            f"{sys.executable} -m aiosmtpd -n -l {settings.smtp_server}:{settings.smtp_port} "
            f"-c aiosmtpd.handlers.Mailbox {mail_dir}",
            env=env,
        )
        click.echo(
            f"local SMTP sink on {settings.smtp_server}:{settings.smtp_port}; mail kept in {mail_dir}/new"
        )
    for offset, role in enumerate([*PROFILES, *([] if no_beat else ["beat"])]):
        # One machine, several /metrics endpoints: METRICS_PORT, +1, +2, ... (0 stays off).
        port = settings.metrics_port and settings.metrics_port + offset
        # `python -m workers` (not bare celery) gives prefork profiles their metrics directory.
        command = f"{sys.executable} -m workers {role}"
        runner.add_process(role, command, env={**env, "METRICS_PORT": str(port)})
    runner.loop()
    sys.exit(runner.returncode or 0)


main.add_command(schedule)
main.add_command(fleet.status)
main.add_command(fleet.publish)
main.add_command(fleet.capacity)
main.add_command(dlq)
main.add_command(task)
