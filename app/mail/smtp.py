"""SMTP delivery with aiosmtplib, driven through the asyncio bridge."""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from app.mail.bridge import BRIDGE, AsyncioBridge


class SmtpTransientError(Exception):
    """The server or the network failed in a way a later attempt may not (4xx, timeouts)."""


class SmtpPermanentError(Exception):
    """The server refused the message for good (5xx): retrying cannot help."""


class EmailSender(Protocol):
    """Anything that can deliver an email message."""

    def send(self, message: EmailMessage) -> None:
        """Deliver ``message`` or raise ``SmtpTransientError``/``SmtpPermanentError``."""


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to reach the SMTP server."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 10.0


#: Told the result of each send (``ok``, ``transient`` or ``permanent``) and its seconds.
SendObserver = Callable[[str, float], None]


class AioSmtpSender:
    """Sends messages with aiosmtplib on the process's asyncio loop."""

    def __init__(
        self, config: SmtpConfig, bridge: AsyncioBridge = BRIDGE, *, observe: SendObserver | None = None
    ) -> None:
        self._config = config
        self._bridge = bridge
        self._observe = observe
        # Resolved once, here: aiosmtplib would otherwise look it up in an
        # executor thread, which deadlocks inside the bridge's loop.
        self._local_hostname = socket.gethostname() or "localhost"
        self._tls_context = ssl.create_default_context() if config.starttls else None

    def send(self, message: EmailMessage) -> None:
        """Deliver one message, classifying failures as transient or permanent.

        Raises:
            SmtpTransientError: a later attempt may succeed.
            SmtpPermanentError: the server refused the message for good.
        """
        if self._observe is None:
            self._deliver(message)
            return
        started, result = time.perf_counter(), "permanent"  # anything unclassified is not retried
        try:
            self._deliver(message)
            result = "ok"
        except SmtpTransientError:
            result = "transient"
            raise
        finally:
            self._observe(result, time.perf_counter() - started)

    def _deliver(self, message: EmailMessage) -> None:
        config = self._config
        try:
            self._bridge.run(
                lambda: aiosmtplib.send(
                    message,
                    hostname=config.host,
                    port=config.port,
                    username=config.username,
                    password=config.password,
                    start_tls=config.starttls,
                    tls_context=self._tls_context,
                    timeout=config.timeout,
                    local_hostname=self._local_hostname,
                ),
                timeout=config.timeout * 3,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise classify(min(r.code for r in exc.recipients), exc.recipients[0].message) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise classify(exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SmtpTransientError(f"SMTP unavailable: {type(exc).__name__}: {scrub(str(exc))}") from exc


#: Anything shaped like an email address, removed from error texts (logs, results).
_ADDRESS = re.compile(r"[^\s<>()'\"]+@[^\s<>()'\"]+")


def scrub(text: str) -> str:
    """Replace email addresses in a server or library message with ``<address>``."""
    return _ADDRESS.sub("<address>", text)


def classify(code: int, message: str) -> SmtpTransientError | SmtpPermanentError:
    """Map an SMTP reply to the retry decision: 4xx may pass, anything else will not."""
    text = f"SMTP {code}: {scrub(message)}"
    return SmtpTransientError(text) if 400 <= code < 500 else SmtpPermanentError(text)
