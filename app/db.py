"""Database engines: one pooled engine per process and URL, never shared across a fork."""

from __future__ import annotations

import os
import threading
from typing import Any

from sqlalchemy import Engine, create_engine, event

_lock = threading.Lock()
_engines: dict[tuple[int, str, bool, bool], Engine] = {}
#: Engines inherited from a parent process. Kept referenced and never touched:
#: closing or collecting them would end the parent's server sessions on the
#: sockets both processes share.
_inherited: list[Engine] = []


def engine_for(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    autocommit: bool = False,
    synchronous_commit: bool = True,
) -> Engine:
    """Return this process's engine for ``url``, creating it on first use.

    Args:
        url: a ``postgresql+psycopg2://`` URL.
        pool_size: connections kept open (raise it for the gevent pool).
        max_overflow: extra connections allowed under a burst.
        autocommit: one round trip per statement, no BEGIN/COMMIT and no
            liveness ping on checkout (a dead connection surfaces as an error
            the caller retries); for single-statement writers such as results.
        synchronous_commit: False lets a commit return before its WAL reaches
            disk (a server crash may lose the last fraction of a second).
    """
    pid = os.getpid()
    key = (pid, url, autocommit, synchronous_commit)
    engine = _engines.get(key)
    if engine is not None:
        return engine
    with _lock:
        for stale in [k for k in _engines if k[0] != pid]:
            _inherited.append(_engines.pop(stale))
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _create(url, pool_size, max_overflow, autocommit, synchronous_commit)
        return engine


def _create(
    url: str, pool_size: int, max_overflow: int, autocommit: bool, synchronous_commit: bool
) -> Engine:
    options = "" if synchronous_commit else "-c synchronous_commit=off"
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=30,
        # Recycle before common pooler and firewall idle cut-offs.
        pool_recycle=1800,
        pool_pre_ping=not autocommit,
        **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
        connect_args={
            "connect_timeout": 5,
            "application_name": f"magnetiq-{os.getpid()}",
            "options": options,
        },
    )
    event.listen(engine, "connect", _on_connect)
    return engine


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Bound every statement, so a stuck lock surfaces as an error, not a hang.
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = '60s'")
    dbapi_connection.commit()


def dispose_all() -> None:
    """Close this process's own engines (worker shutdown)."""
    pid = os.getpid()
    with _lock:
        for key in [k for k in _engines if k[0] == pid]:
            _engines.pop(key).dispose()
