"""Connections the command line opens: fail fast, in one line, with how to start the service."""

from __future__ import annotations

import click
from kombu import Connection

from app.settings import Settings, mask_url

#: What to run when a service is down, shown with the error.
START_HINTS = {
    "rabbitmq": "start it with `rabbitmq-server -detached` or point CELERY_BROKER_URL at a running broker",
    "postgresql": (
        "start it with `pg_ctlcluster <version> main start` or point DATABASE_URL at a running server"
    ),
}


class ServiceDown(click.ClickException):
    """A required service is unreachable: one clear line, exit status 2."""

    exit_code = 2


def broker_connection(settings: Settings) -> Connection:
    """Connect to the broker once, failing fast with a clear error."""
    connection = Connection(settings.celery_broker_url, connect_timeout=5, ssl=settings.broker_ssl or False)
    try:
        connection.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:
        raise ServiceDown(
            f"RabbitMQ is not reachable at {mask_url(settings.celery_broker_url)} ({exc}); "
            f"{START_HINTS['rabbitmq']}"
        ) from exc
    return connection
