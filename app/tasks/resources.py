"""Per-process collaborators of the tasks, created on first use in each process."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from app.booking.provider import HttpPaymentProvider
from app.celery_app import celery_app
from app.db import engine_for
from app.mail.ledger import SENT_UNMARKED_HEADER, SqlDeliveryLedger
from app.result_backend import PostgresBackend
from app.settings import get_settings, sqlalchemy_url

if TYPE_CHECKING:
    from app.mail.service import MailService
    from app.mail.smtp import SendObserver

#: Called after each SMTP send with its result (``ok``, ``transient``, ``permanent``)
#: and seconds; ``workers.metrics`` sets it, so app code never imports the workers.
on_smtp_send: SendObserver | None = None


def engine() -> Engine:
    """The domain database engine of this process."""
    return engine_for(get_settings().database_url)


@lru_cache(maxsize=1)
def payment_provider() -> HttpPaymentProvider:
    """The payment provider client (``PAYMENT_PROVIDER_URL``)."""
    settings = get_settings()
    return HttpPaymentProvider(settings.payment_provider_url, timeout=settings.payment_provider_timeout)


@lru_cache(maxsize=1)
def mail_service() -> MailService:
    """The mail service, wired to the configured SMTP server.

    Its modules (aiosmtplib, the gevent bridge, jinja2) are imported here, on
    first use: only the email worker sends, and every other worker process
    stays about 6 MiB smaller without them.
    """
    from app.mail.render import Renderer
    from app.mail.service import MailService
    from app.mail.smtp import AioSmtpSender, SmtpConfig

    settings = get_settings()
    config = SmtpConfig(
        host=settings.smtp_server,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        starttls=settings.smtp_starttls,
        timeout=settings.smtp_timeout,
        max_connections=settings.smtp_max_connections,
        rate_per_second=settings.smtp_rate_limit,
    )
    # One autocommit statement per ledger step; a `sending` row outlives the
    # longest send by a margin before another attempt may take it over. Every
    # connection is kept (no overflow): SQLAlchemy closes an overflow connection
    # when it is returned, so 100 greenlets opened one per statement.
    ledger_engine = engine_for(settings.database_url, pool_size=30, max_overflow=0, autocommit=True)
    ledger = SqlDeliveryLedger(
        ledger_engine,
        lease_seconds=delivery_lease(),
        commit_with=commit_with_result,
        accepted=sent_by_earlier_run,
    )
    sender = AioSmtpSender(config, observe=_smtp_sent)
    throttle = None
    if settings.smtp_fleet_rate_limit or settings.smtp_domain_rate_limit:
        from app.mail.throttle import FleetThrottle

        store = settings.smtp_rate_store_url or settings.database_url
        throttle = FleetThrottle(
            engine_for(store, pool_size=30, max_overflow=0, autocommit=True),
            settings.smtp_fleet_rate_limit,
            settings.smtp_domain_rate_limit,
        )
    return MailService(sender, Renderer(), settings.mail_from, ledger, throttle)


def delivery_lease() -> float:
    """Seconds a ``sending`` ledger row is left to its attempt: the longest send, plus a margin."""
    from app.mail.smtp import SEND_DEADLINE_TIMEOUTS  # on first use, as in ``mail_service``

    return get_settings().smtp_timeout * SEND_DEADLINE_TIMEOUTS + 30


def commit_with_result(task_id: str, sql: str, params: dict[str, Any], rerun_headers: dict[str, str]) -> bool:
    """Have ``sql`` committed with the running task's result row, if that row will be stored.

    Only for task ``task_id`` running in this process (not eagerly) with its
    result stored by the fleet's backend in the domain database: anywhere else
    the caller runs ``sql`` itself.
    """
    task = celery_app.current_worker_task  # None outside a worker's task, and for eager calls
    if task is None or task.request.id != task_id or task.ignore_result or task.request.ignore_result:
        return False
    backend = task.backend
    if not isinstance(backend, PostgresBackend) or backend.url != sqlalchemy_url(get_settings().database_url):
        return False
    backend.commit_with_result(task_id, sql, params, rerun_headers)
    return True


def sent_by_earlier_run(key: str, task_id: str) -> bool:
    """Is the running task ``task_id`` a rerun owing ``key``'s sent mark (``SENT_UNMARKED_HEADER``)?"""
    task = celery_app.current_worker_task
    if task is None or task.request.id != task_id:
        return False
    return bool((task.request.headers or {}).get(SENT_UNMARKED_HEADER) == key)


def _smtp_sent(result: str, seconds: float) -> None:
    # Read at call time: the hook may be set after the sender was built.
    if on_smtp_send is not None:
        on_smtp_send(result, seconds)
