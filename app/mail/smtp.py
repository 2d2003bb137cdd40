"""SMTP delivery with aiosmtplib, driven through the asyncio bridge."""

from __future__ import annotations

import functools
import os
import re
import socket
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Protocol

import aiosmtplib

from app.mail.bridge import BRIDGE, AsyncioBridge
from app.mail.errors import SmtpPermanentError, SmtpTransientError
from app.mail.mime import to_bytes
from app.mail.pool import SmtpConfig, SmtpPool

__all__ = ["AioSmtpSender", "EmailSender", "SmtpConfig", "SmtpPermanentError", "SmtpTransientError"]

#: A send (waiting for a connection slot and the rate limit included) is abandoned
#: as transient after this many SMTP timeouts.
SEND_DEADLINE_TIMEOUTS = 6


class EmailSender(Protocol):
    """Anything that can deliver an email message."""

    def send(self, message: EmailMessage) -> None:
        """Deliver ``message`` or raise ``SmtpTransientError``/``SmtpPermanentError``."""


#: Told the result of each send (``ok``, ``transient`` or ``permanent``) and its seconds.
SendObserver = Callable[[str, float], None]


class AioSmtpSender:
    """Sends messages with aiosmtplib on the process's asyncio loop, reusing connections.

    Each process gets its own pool (a forked child never touches its parent's
    connections): at most ``max_connections`` open, sends started at most
    ``rate_per_second``.
    """

    def __init__(
        self, config: SmtpConfig, bridge: AsyncioBridge = BRIDGE, *, observe: SendObserver | None = None
    ) -> None:
        self._config = config
        self._bridge = bridge
        self._observe = observe
        # Resolved once, here: aiosmtplib would otherwise look it up in an
        # executor thread, which deadlocks inside the bridge's loop.
        self._local_hostname = socket.gethostname() or "localhost"
        self._pool: SmtpPool | None = None
        self._pool_pid = 0

    def pool(self) -> SmtpPool:
        """This process's connection pool (created on first use, after a fork anew)."""
        if self._pool is None or self._pool_pid != os.getpid():
            self._pool, self._pool_pid = SmtpPool(self._config, self._local_hostname), os.getpid()
        return self._pool

    def close(self) -> None:
        """Quit this process's idle SMTP connections (worker shutdown)."""
        if self._pool is not None and self._pool_pid == os.getpid():
            pool, self._pool = self._pool, None
            self._bridge.run(pool.close, timeout=self._config.timeout)

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
        # Serialised here, in the caller's greenlet: the loop thread only does I/O.
        sender, recipient = _sender_address(message["From"]), parseaddr(message["To"])[1]
        data = to_bytes(message)
        pool = self.pool()
        try:
            self._bridge.run(
                lambda: pool.send(sender, [recipient], data),
                timeout=self._config.timeout * SEND_DEADLINE_TIMEOUTS,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise classify(min(r.code for r in exc.recipients), exc.recipients[0].message) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise classify(exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SmtpTransientError(f"SMTP unavailable: {type(exc).__name__}: {scrub(str(exc))}") from exc


@functools.lru_cache(maxsize=16)
def _sender_address(header: str) -> str:
    """The address of a From header (configuration: the same on every message)."""
    return parseaddr(header)[1]


#: Anything shaped like an email address, removed from error texts (logs, results).
_ADDRESS = re.compile(r"[^\s<>()'\"]+@[^\s<>()'\"]+")


def scrub(text: str) -> str:
    """Replace email addresses in a server or library message with ``<address>``."""
    return _ADDRESS.sub("<address>", text)


def classify(code: int, message: str) -> SmtpTransientError | SmtpPermanentError:
    """Map an SMTP reply to the retry decision: 4xx may pass, anything else will not."""
    text = f"SMTP {code}: {scrub(message)}"
    return SmtpTransientError(text) if 400 <= code < 500 else SmtpPermanentError(text)
