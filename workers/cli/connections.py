"""Connections the command line opens: fail fast, in one line, with how to start the service."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import click
from kombu import Connection
from sqlalchemy.exc import OperationalError

from app.settings import Settings, get_settings, mask_url

Service = Literal["rabbitmq", "postgresql"]

#: Each service's name in messages, the setting that points at it, and what to run when it is down.
START_HINTS: dict[Service, tuple[str, str, str]] = {
    "rabbitmq": ("RabbitMQ", "CELERY_BROKER_URL", "start it with `rabbitmq-server -detached`"),
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
    connection = Connection(settings.celery_broker_url, connect_timeout=5, ssl=settings.broker_ssl or False)
    try:
        connection.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:
        raise ServiceDown("rabbitmq", settings.celery_broker_url, exc) from exc
    return connection


@contextmanager
def database_errors(url: str | None = None) -> Iterator[None]:
    """Turn a database (``url``, default DATABASE_URL) unreachable in the block into :class:`ServiceDown`."""
    try:
        yield
    except (OperationalError, ConnectionError) as exc:
        raise ServiceDown("postgresql", url or get_settings().database_url, exc) from exc


class RabbitMQOnly(click.ClickException):
    """A command that reads RabbitMQ's queues, asked of a Redis broker: say so, and what to use."""

    exit_code = 2

    def __init__(self, command: str) -> None:
        super().__init__(
            f"`magnetiq {command}` reads RabbitMQ's queues; CELERY_BROKER_URL names Redis, whose "
            "queues are lists: `redis-cli LLEN <queue>`, `redis-cli LRANGE <queue>.dlq 0 -1`"
        )


def rabbitmq_connection(settings: Settings, command: str) -> Connection:
    """``broker_connection`` for a command that reads RabbitMQ's queues (``RabbitMQOnly`` on Redis)."""
    if settings.broker != "amqp":
        raise RabbitMQOnly(command)
    return broker_connection(settings)
