"""Emails per second across the whole fleet, and per recipient domain, shared through PostgreSQL.

``SMTP_RATE_LIMIT`` spaces the sends of one worker process, so the fleet's
rate moves whenever KEDA adds or removes email workers. This limit is one
row per key in ``send_rates`` (``all``, ``domain:<domain>``), read and moved
by one statement per send: the generic cell rate algorithm, on PostgreSQL's
clock. A row keeps the earliest time the next send may start (``tat``); a
send that finds it due moves it on by ``1 / rate`` and goes, one that does
not is told how long to wait. Sends are spaced evenly, with no burst,
however many workers share the key.

When the store is unreachable the limit steps aside for ``RETRY_SECONDS``
(logged once each time) and each process keeps only its own
``SMTP_RATE_LIMIT``: mail goes on, more slowly bounded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

#: Seconds the fleet limit steps aside after its store failed, before it tries again.
RETRY_SECONDS = 5.0
#: One send: take the key's slot if it is due, else say how many seconds until it is.
_TAKE = text(
    """
WITH taken AS (
    INSERT INTO send_rates AS r (key, tat) VALUES (:key, clock_timestamp() + make_interval(secs => :interval))
    ON CONFLICT (key) DO UPDATE
        SET tat = GREATEST(r.tat, clock_timestamp()) + make_interval(secs => :interval)
        WHERE r.tat <= clock_timestamp()
    RETURNING 0.0::float8 AS wait
)
SELECT wait FROM taken
UNION ALL
SELECT GREATEST(EXTRACT(EPOCH FROM tat - clock_timestamp())::float8, 0.001) FROM send_rates
WHERE key = :key AND NOT EXISTS (SELECT 1 FROM taken)
"""
)


class FleetThrottle:
    """Waits until this email may start under the fleet-wide and per-domain limits."""

    def __init__(
        self,
        engine: Engine,
        rate: float,
        domain_rate: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Share ``rate`` emails per second in total and ``domain_rate`` per domain (0: no such limit)."""
        self._engine = engine
        #: (key prefix, rate): the domain's first, so no fleet slot is held while waiting for it.
        self._limits = [(prefix, r) for prefix, r in (("domain:", domain_rate), ("all", rate)) if r > 0]
        self._sleep = sleep
        self._aside_until = 0.0

    def wait(self, domain: str) -> float:
        """Return once a send to ``domain`` may start; the seconds waited (domain slot first)."""
        waited = 0.0
        for prefix, rate in self._limits:
            key = f"{prefix}{domain.lower()}" if prefix == "domain:" else prefix
            waited += self._take(key, 1.0 / rate)
        return waited

    def _take(self, key: str, interval: float) -> float:
        waited = 0.0
        while time.monotonic() >= self._aside_until:
            try:
                with self._engine.connect() as db:
                    found = db.execute(_TAKE, {"key": key, "interval": interval}).scalar()
                    db.commit()
                # None: another send created the key's row after this statement's snapshot was taken.
                wait = interval if found is None else float(found)
            except OperationalError as exc:
                self._aside_until = time.monotonic() + RETRY_SECONDS
                log.warning(
                    "fleet rate limit: store unreachable, each process keeps only SMTP_RATE_LIMIT "
                    "for %.0fs: %s",
                    RETRY_SECONDS,
                    " ".join(str(exc.orig).split()),
                )
                return waited
            if not wait:
                return waited
            self._sleep(wait)
            waited += wait
        return waited
