"""``magnetiq dlq list|show|replay|purge``: the dead-letter queues from the command line.

On RabbitMQ a DLQ is a quorum queue; on Redis, the list ``<queue>.dlq``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from app.maintenance.dead_letters import is_redis
from app.settings import get_settings
from workers.cli import dead_letters, redis_queues
from workers.cli.connections import broker_connection
from workers.cli.dead_letters import DeadLetter, ReplayError, dlq_name, peek
from workers.cli.fleet import duration


def _dlq(_: click.Context, __: click.Parameter, value: str) -> str:
    try:
        return dlq_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


queue_argument = click.argument("queue", callback=_dlq)
limit_option = click.option("--limit", default=100, show_default=True, help="Most messages to read.")


def summary(dead: DeadLetter) -> str:
    """One line per message: id, task, where and why it died, how long ago."""
    return (
        f"{dead.task_id or '-':<36} {dead.task or '-':<45} {dead.queue or '-':<12} "
        f"{dead.reason or '-':<15} {dead.deaths:>3} {duration(dead.age()):>9}"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


@click.group()
def dlq() -> None:
    """Dead-letter queues (QUEUE is email, booking or maintenance, or its .dlq name)."""


@dlq.command("list")
@queue_argument
@limit_option
def dlq_list(queue: str, limit: int) -> None:
    """List the messages of a DLQ, head first, leaving them all in place."""
    with broker_connection(get_settings()) as connection:
        found = peek(connection, queue, limit)
    click.echo(f"{'task id':<36} {'task':<45} {'died in':<12} {'reason':<15} {'n':>3} {'ago':>9}")
    for dead in found:
        click.echo(summary(dead))
    click.echo(f"{len(found)} message(s) read from {queue}, all left in place")


@dlq.command("show")
@queue_argument
@click.argument("task_id")
@limit_option
def dlq_show(queue: str, task_id: str, limit: int) -> None:
    """Show one message of a DLQ (headers, properties, arguments) by task id, leaving it in place."""
    with broker_connection(get_settings()) as connection:
        found = [dead for dead in peek(connection, queue, limit) if dead.task_id == task_id]
    if not found:
        raise click.ClickException(f"{task_id} is not among the first {limit} messages of {queue}")
    dead = found[0]
    shown = {"headers": dead.headers, "properties": dead.properties, "body": dead.arguments()}
    click.echo(json.dumps(_jsonable(shown), indent=2, sort_keys=True, default=str))


@dlq.command("replay")
@queue_argument
@limit_option
@click.option("--task-id", "task_ids", multiple=True, help="Replay only this task id (repeatable).")
@click.option("--task", "task_names", multiple=True, help="Replay only tasks of this name (repeatable).")
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; move nothing.")
def dlq_replay(
    queue: str, limit: int, task_ids: tuple[str, ...], task_names: tuple[str, ...], dry_run: bool
) -> None:
    """Republish DLQ messages to their work queues, keeping headers (x-death dropped)."""

    def selected(dead: DeadLetter) -> bool:
        return (not task_ids or dead.task_id in task_ids) and (not task_names or dead.task in task_names)

    with broker_connection(get_settings()) as connection:
        try:
            mover = redis_queues.replay if is_redis(connection) else dead_letters.replay
            done = mover(connection, queue, limit=limit, select=selected, dry_run=dry_run)
        except ReplayError as exc:
            raise click.ClickException(f"{exc}; nothing after it was replayed") from exc
    verb = "would replay" if dry_run else "replayed"
    for item in done:
        click.echo(f"{verb} {item.dead.task_id} {item.dead.task} -> {item.queue} ({item.routing_key})")
    click.echo(f"{len(done)} message(s) {verb} from {queue}")


@dlq.command("purge")
@queue_argument
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(queue: str, yes: bool) -> None:
    """Delete every message of a DLQ (asks first)."""
    if not yes:
        click.confirm(f"Delete every message in {queue}?", abort=True)
    with broker_connection(get_settings()) as connection:
        deleted = (redis_queues.purge if is_redis(connection) else dead_letters.purge)(connection, queue)
    click.echo(f"purged {deleted} message(s) from {queue}")
