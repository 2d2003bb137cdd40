"""Per-process collaborators of the tasks, created on first use in each process."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine

from app.booking.provider import HttpPaymentProvider
from app.db import engine_for
from app.mail.ledger import SqlDeliveryLedger
from app.mail.render import Renderer
from app.mail.service import MailService
from app.mail.smtp import SEND_DEADLINE_TIMEOUTS, AioSmtpSender, SendObserver, SmtpConfig
from app.settings import get_settings

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
    """The mail service, wired to the configured SMTP server."""
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
        ledger_engine, lease_seconds=settings.smtp_timeout * SEND_DEADLINE_TIMEOUTS + 30
    )
    sender = AioSmtpSender(config, observe=_smtp_sent)
    return MailService(sender, Renderer(), settings.mail_from, ledger)


def _smtp_sent(result: str, seconds: float) -> None:
    # Read at call time: the hook may be set after the sender was built.
    if on_smtp_send is not None:
        on_smtp_send(result, seconds)
