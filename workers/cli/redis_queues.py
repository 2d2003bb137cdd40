"""The ops commands on a Redis broker, where each queue is a list of kombu's JSON payloads.

A list's head is its right end (kombu pops there, publishes at the left), so
reading the head is ``LRANGE -n -1`` and moves nothing. Messages a worker
holds are in kombu's ``unacked`` hash as ``[payload, exchange, routing_key]``;
the routing key's first word is the work queue. Redis keeps no consumer
count: the workers say which queues they consume (``active_queues``).

A replayed message moves from the DLQ list to its work queue's list in one
Lua script: it is in exactly one of them, never both, never neither.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import click
from kombu import Connection
from kombu.utils.json import dumps, loads

from app.celery_app import celery_app
from app.maintenance.dead_letters import DeadLetter, redis_client, redis_head
from routing import names
from workers.cli.dead_letters import Replayed, ReplayError, replay_headers, replay_route
from workers.cli.queue_stats import QueueStats

#: Remove ARGV[1] from the head end of KEYS[1]; only if it was there, push ARGV[2] onto KEYS[2].
MOVE = """
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


def consumers(connection: Connection, timeout: float) -> Counter[str]:
    """Workers consuming each queue, as the workers that answer within ``timeout`` say."""
    inspect = celery_app.control.inspect(timeout=timeout, connection=connection)
    replies = inspect.active_queues() or {}
    return Counter(queue["name"] for queues in replies.values() for queue in queues or ())


def unacked(connection: Connection) -> Counter[str]:
    """Messages held by workers (delivered, not yet acked), per work queue."""
    held: Counter[str] = Counter()
    for stored in redis_client(connection).hvals(connection.default_channel.unacked_key):  # type: ignore[attr-defined]
        _, _, routing_key = loads(stored)
        held[str(routing_key).split(".", 1)[0]] += 1
    return held


def read_stats(connection: Connection, timeout: float) -> list[QueueStats]:
    """Every work queue's counts: list lengths, held messages, consumers, its DLQ's depth and head age."""
    client = redis_client(connection)
    held, consuming = unacked(connection), consumers(connection, timeout)
    stats = []
    for queue in names.WORK_QUEUES:
        dlq = names.dlq(queue)
        head = [DeadLetter.from_payload(loads(raw)) for raw in redis_head(connection, dlq, 1)]
        stats.append(
            QueueStats(
                name=queue,
                ready=int(client.llen(queue)),
                consumers=consuming[queue],
                unacked=held[queue],
                dlq_ready=int(client.llen(dlq)),
                dlq_oldest_age=head[0].age() if head else None,
            )
        )
    return stats


def bound_queues(connection: Connection) -> set[str]:
    """Queues bound to the tasks exchange (``magnetiq topology apply`` binds them)."""
    table = connection.default_channel.get_table(names.TASKS_EXCHANGE)  # type: ignore[attr-defined]
    return {queue for _, _, queue in table}


def check_topology(connection: Connection) -> list[str]:
    """Each work queue bound to the tasks exchange, a line each with its depth; return the unbound.

    The dead-letter lists need no binding: the workers' transport fills them.
    """
    bound, client = bound_queues(connection), redis_client(connection)
    for queue in names.WORK_QUEUES:
        state = "ok     " if queue in bound else "MISSING"
        click.echo(f"{state} {queue:<16} ready={client.llen(queue):<6} bound to {names.TASKS_EXCHANGE}")
    for queue in map(names.dlq, names.WORK_QUEUES):
        click.echo(f"ok      {queue:<16} ready={client.llen(queue):<6} a list the workers fill")
    return [queue for queue in names.WORK_QUEUES if queue not in bound]


def replay(
    connection: Connection,
    queue: str,
    *,
    limit: int = 100,
    select: Callable[[DeadLetter], bool] = lambda _: True,
    dry_run: bool = False,
) -> list[Replayed]:
    """Move selected messages among the first ``limit`` of a DLQ list back to their work queues.

    Raises:
        ReplayError: a message has no route, its queue is not bound, or it left the DLQ
            meanwhile (another replay or a purge); it and every message after it stay.
    """
    client = redis_client(connection)
    move = client.register_script(MOVE)
    bound = bound_queues(connection)
    replayed: list[Replayed] = []
    for raw in redis_head(connection, queue, limit):
        payload = loads(raw)
        dead = DeadLetter.from_payload(payload)
        if not select(dead):
            continue
        exchange, routing_key, work_queue = replay_route(dead)
        if work_queue not in bound:
            raise ReplayError(
                f"message {dead.task_id}: {work_queue} is not bound; run `magnetiq topology apply`"
            )
        if not dry_run and not move(
            keys=[queue, work_queue], args=[raw, replayed_payload(payload, dead, exchange, routing_key)]
        ):
            raise ReplayError(f"message {dead.task_id}: no longer in {queue} (replayed or purged meanwhile)")
        replayed.append(Replayed(dead, work_queue, routing_key, done=not dry_run))
    return replayed


def replayed_payload(payload: dict[str, Any], dead: DeadLetter, exchange: str, routing_key: str) -> str:
    """The copy for the work queue: the same body, death headers dropped, delivered afresh."""
    properties = {
        key: value for key, value in (payload.get("properties") or {}).items() if key != "expiration"
    }
    properties.update(
        delivery_mode=2,
        delivery_tag=str(uuid.uuid4()),
        delivery_info={"exchange": exchange, "routing_key": routing_key},
    )
    return str(dumps({**payload, "headers": replay_headers(dead), "properties": properties}))


def purge(connection: Connection, queue: str) -> int:
    """Delete a list in one transaction; return how many messages it held."""
    with redis_client(connection).pipeline() as pipe:
        pipe.llen(queue)
        pipe.delete(queue)
        held, _ = pipe.execute()
    return int(held)
