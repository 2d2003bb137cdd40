"""Where a drain's results land, and the check that every task stored exactly one.

A drain that loses results, or stores some twice, must not print a rate: the
rate would measure a system that does less than the fleet promises. Each
drain publishes known task ids and, after its worker has stopped, holds the
stored results against them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from sqlalchemy import text

#: Key prefix of Celery's key-value result backends (``KeyValueStoreBackend.task_keyprefix``).
REDIS_RESULT_PREFIX = "celery-task-meta-"


class Results(Protocol):
    """A result store a drain writes to."""

    def clear(self) -> None:
        """Remove every stored result."""

    def stored(self) -> list[tuple[str, str]]:
        """Every stored result as (task id, state), one pair per stored row or key."""


@dataclass(frozen=True)
class TableResults:
    """Results in a PostgreSQL table: the fleet's ``task_results`` or Celery's stock table."""

    engine: Any
    table: str

    def _exists(self, db: Any) -> bool:
        return bool(db.execute(text("SELECT to_regclass(:t)"), {"t": self.table}).scalar())

    def clear(self) -> None:
        """Empty the table (plain Celery creates its own on first use)."""
        with self.engine.begin() as db:
            if self._exists(db):
                db.execute(text(f"TRUNCATE {self.table}"))

    def stored(self) -> list[tuple[str, str]]:
        """Every row's (task id, status)."""
        with self.engine.connect() as db:
            if not self._exists(db):
                return []
            rows = db.execute(text(f"SELECT task_id, status FROM {self.table}"))
            return [(str(task_id), str(status)) for task_id, status in rows]


@dataclass(frozen=True)
class RedisResults:
    """Results in a Redis database of the bench's own, as Celery's Redis backend stores them.

    The seed keeps its broker queues in the same database, so ``clear`` empties
    those too (``FLUSHDB`` touches this database only).
    """

    url: str

    def client(self) -> redis.Redis:
        """A client on this database."""
        return redis.Redis.from_url(self.url)

    def clear(self) -> None:
        """Flush this database only."""
        with self.client() as client:
            client.flushdb()

    def stored(self) -> list[tuple[str, str]]:
        """Every result key's (task id, status)."""
        with self.client() as client:
            keys = list(client.scan_iter(match=REDIS_RESULT_PREFIX + "*", count=1000))
            found = []
            for start in range(0, len(keys), 1000):
                chunk = keys[start : start + 1000]
                for key, value in zip(chunk, client.mget(chunk), strict=True):
                    status = "MISSING" if value is None else json.loads(value)["status"]
                    found.append((key.decode()[len(REDIS_RESULT_PREFIX) :], status))
            return found

    def depth(self, queue: str) -> int:
        """Messages waiting on a queue of the Redis broker (kombu keeps each queue as a list)."""
        with self.client() as client:
            return int(client.llen(queue))


class ResultsMismatch(RuntimeError):
    """A drain did not store exactly one successful result per task that expects one."""


def check_results(results: Results, expected: Collection[str], what: str) -> int:
    """Raise unless exactly the ``expected`` task ids stored one SUCCESS result each; return the count.

    Args:
        results: where the drain's worker stored its results.
        expected: the task ids that must have a result (ids published with
            results ignored must not be among them).
        what: the drain's name, for the error.

    Raises:
        ResultsMismatch: a result missing, stored twice, not SUCCESS, or for a task not expected.
    """
    stored = results.stored()
    counts = Counter(task_id for task_id, _ in stored)
    wanted = set(expected)
    missing = wanted - counts.keys()
    unexpected = counts.keys() - wanted
    twice = [task_id for task_id, count in counts.items() if count > 1]
    failed = [task_id for task_id, state in stored if state != "SUCCESS"]
    if missing or unexpected or twice or failed:
        raise ResultsMismatch(
            f"bench: {what}: {len(stored)} results for {len(wanted)} tasks that store one: "
            f"{len(missing)} missing, {len(unexpected)} for tasks that store none, "
            f"{len(twice)} stored twice, {len(failed)} not SUCCESS"
        )
    return len(stored)
