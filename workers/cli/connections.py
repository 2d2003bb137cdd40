"""Connections the command line opens: fail fast, in one line, with how to start the service."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import click
from kombu import Connection
from sqlalchemy.exc import OperationalError

from app.celery_app import REDIS_TRANSPORTS
from app.settings import Settings, broker_scheme, get_settings, mask_url

Service = Literal["rabbitmq", "redis", "postgresql"]

#: Each service's name in messages, the setting that points at it, and what to run when it is down.
START_HINTS: dict[Service, tuple[str, str, str]] = {
    "rabbitmq": ("RabbitMQ", "CELERY_BROKER_URL", "start it with `rabbitmq-server -detached`"),
    "redis": ("Redis", "CELERY_BROKER_URL", "start it with `redis-server --daemonize yes`"),
    "postgresql": (
        "PostgreSQL",
        "DATABASE_URL",
        "start it with `pg_ctlcluster <version> main start`, then run `magnetiq db upgrade`",
    ),
}


class ServiceDown(click.ClickException):
    """A required service is unreachable: one clear line with how to start it, exit status 2."""

    exit_code = 2

    def __init__(self, service: Service, url: str, cause: BaseException) -> None:
        name, setting, hint = START_HINTS[service]
        reason = cause.orig if isinstance(cause, OperationalError) else cause
        detail = " ".join(str(reason).split()) or type(cause).__name__
        super().__init__(
            f"{name} is not reachable at {mask_url(url)} ({detail}); "
            f"{hint}, or point {setting} at a running server"
        )
        self.service = service


def broker_connection(settings: Settings) -> Connection:
    """Connect to the broker once, failing fast with a clear error."""
    connection = Connection(
        settings.celery_broker_url,
        connect_timeout=5,
        ssl=settings.broker_ssl or False,
        transport=REDIS_TRANSPORTS.get(broker_scheme(settings.celery_broker_url) or ""),
    )
    try:
        connection.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:
        service: Service = "rabbitmq" if settings.broker == "amqp" else "redis"
        raise ServiceDown(service, settings.celery_broker_url, exc) from exc
    return connection


@contextmanager
def database_errors(url: str | None = None) -> Iterator[None]:
    """Turn a database (``url``, default DATABASE_URL) unreachable in the block into :class:`ServiceDown`."""
    try:
        yield
    except (OperationalError, ConnectionError) as exc:
        raise ServiceDown("postgresql", url or get_settings().database_url, exc) from exc
