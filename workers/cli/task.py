"""``magnetiq task cancel|show``: one task by id, from the command line."""

from __future__ import annotations

import json
from typing import Any

import click

from app import cancellations
from app.celery_app import celery_app
from app.contracts import PROGRESS
from app.settings import get_settings
from routing.topology import DEAD_LETTER_QUEUES
from workers.cli.connections import broker_connection, database_errors
from workers.cli.dead_letters import peek

#: Seconds ``task show`` waits for the workers to say whether they hold the task.
INSPECT_TIMEOUT = 1.0


def _task_id(_: click.Context, __: click.Parameter, value: tuple[str, ...] | str) -> Any:
    try:
        if isinstance(value, str):
            return cancellations.check_task_id(value)
        return tuple(cancellations.check_task_id(one) for one in value)
    except cancellations.InvalidTaskId as exc:
        raise click.BadParameter(str(exc)) from exc


@click.group()
def task() -> None:
    """One task by id: cancel it for good, or show its state and where it is."""


@task.command("cancel")
@click.argument("task_ids", nargs=-1, required=True, callback=_task_id)
def task_cancel(task_ids: tuple[str, ...]) -> None:
    """Cancel TASK_IDS: workers skip them when they arrive, after any restart, on any replica.

    A task that is running is told (``FleetTask.stop_if_cancelled``) and
    terminated after CANCEL_GRACE_SECONDS if still running; one that has
    already finished is left as it is.
    """
    with database_errors():
        done = [cancellations.cancel(task_id) for task_id in task_ids]
    for one in done:
        if one.cancelled:
            click.echo(
                f"cancelled {one.task_id} (state {one.state}): workers skip it; a running one is "
                "told to stop, and terminated after its worker's CANCEL_GRACE_SECONDS"
            )
        else:
            click.echo(f"not cancelled {one.task_id}: it already finished ({one.state})")


@task.command("show")
@click.argument("task_id", callback=_task_id)
@click.option("--dlq-limit", default=100, show_default=True, help="Messages read per DLQ to find it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def task_show(task_id: str, dlq_limit: int, as_json: bool) -> None:
    """Show a task's state, result, attempts, cancellation, and where it is.

    Where: running, prefetched or scheduled on a worker (asked by broadcast, so
    the account needs the workers' pidbox), in a dead-letter queue (its first
    --dlq-limit messages, left in place; a failed task's message is there), or
    finished. An unfinished task in none of these is waiting in its queue or
    was never published: the broker does not say which without consuming.
    """
    settings = get_settings()
    with database_errors():
        meta = celery_app.backend.get_task_meta(task_id)  # one read, for every field below
        cancelled = cancellations.cancelled_at(task_id)
    shown: dict[str, Any] = {
        "task": task_id,
        "state": meta["status"],
        "name": meta.get("name"),
        "result": _text(meta.get("result")),
        "done": meta.get("date_done"),
        "retries": meta.get("retries"),
        "worker": meta.get("worker"),
        "queue": meta.get("queue"),
        "cancelled": cancelled,
        "where": None,
    }
    if meta["status"] == PROGRESS and isinstance(meta.get("result"), dict):
        done, total = meta["result"].get("done"), meta["result"].get("total")
        shown["result"] = None
        shown["progress"] = f"{done}/{total}" + (f" ({100 * done / total:.0f} %)" if total else "")
    finished = meta["status"] in ("SUCCESS", "FAILURE", "REVOKED")
    if not finished:
        shown["where"] = _on_a_worker(task_id)
    if shown["where"] is None and meta["status"] != "SUCCESS":
        with broker_connection(settings) as connection:
            shown["where"] = _in_a_dlq(connection, task_id, dlq_limit)
    if shown["where"] is None:
        shown["where"] = (
            "finished"
            if finished
            else f"in its queue, or never published (on no worker, not in a DLQ's first {dlq_limit})"
        )
    if as_json:
        click.echo(json.dumps(shown, default=str))
        return
    for key, value in shown.items():
        if value is not None:
            click.echo(f"{key + ':':<11}{value}")


#: Celery's word for a request a worker holds, and ours.
WHERE_ON_A_WORKER = {"active": "running", "reserved": "prefetched", "scheduled": "scheduled"}


def _text(value: Any) -> Any:
    return repr(value) if isinstance(value, BaseException) else value


def _on_a_worker(task_id: str) -> str | None:
    try:
        replies = celery_app.control.inspect(timeout=INSPECT_TIMEOUT).query_task(task_id) or {}
    except Exception as exc:  # any broker's refusal (an account without the pidbox): say so, look on
        click.echo(f"(workers not asked: {' '.join(str(exc).split()) or type(exc).__name__})", err=True)
        return None
    for node, held in replies.items():
        if task_id in (held or {}):
            kind = held[task_id][0]
            return f"{WHERE_ON_A_WORKER.get(kind, kind)} on {node}"
    return None


def _in_a_dlq(connection: Any, task_id: str, limit: int) -> str | None:
    for queue in DEAD_LETTER_QUEUES:
        for dead in peek(connection, queue.name, limit):
            if dead.task_id == task_id:
                return f"dead-lettered in {queue.name} ({dead.reason or 'rejected'}, {dead.deaths} death(s))"
    return None
