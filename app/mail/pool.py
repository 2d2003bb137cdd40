"""Reused SMTP connections and a send-rate limit, living on the bridge's asyncio loop.

Every coroutine here runs on the one loop of its process (``app.mail.bridge``),
so the pool, its semaphore and the rate limiter need no locks: they are shared
by every greenlet of the worker through that loop.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import aiosmtplib


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to reach the SMTP server, and the provider's limits."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    #: Seconds for the connect and for each SMTP command.
    timeout: float = 10.0
    #: Open connections at most; a send beyond it waits for a free one.
    max_connections: int = 100
    #: Messages per second started at most by this process; 0 means no limit.
    rate_per_second: float = 0.0
    #: An idle connection older than this is checked with NOOP before reuse.
    idle_check_seconds: float = 5.0


class RateLimiter:
    """Spaces sends evenly at ``rate`` per second (no burst), on one asyncio loop."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        """Return when the next send may start."""
        if not self._interval:
            return
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + self._interval
        if start > now:
            await asyncio.sleep(start - now)


class SmtpPool:
    """Up to ``max_connections`` aiosmtplib clients, reused across messages."""

    def __init__(self, config: SmtpConfig, local_hostname: str) -> None:
        self._config = config
        self._local_hostname = local_hostname
        self._tls_context = ssl.create_default_context() if config.starttls else None
        self._slots = asyncio.Semaphore(config.max_connections)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._limiter = RateLimiter(config.rate_per_second)
        #: Connections opened so far (tests read it to see reuse).
        self.opened = 0

    async def send(self, sender: str, recipients: list[str], data: bytes) -> None:
        """Send the serialised message ``data`` on a pooled connection, opening one when none is idle.

        Raises:
            aiosmtplib.SMTPException, OSError, TimeoutError: as aiosmtplib raises them.
        """
        async with self._slots:
            await self._limiter.wait()
            client = await self._checkout()
            try:
                await client.sendmail(sender, recipients, data)
            except aiosmtplib.SMTPResponseException as exc:
                # aiosmtplib has sent RSET: the connection is reusable unless the
                # server said it is closing (421) or went away.
                self._checkin(client, reusable=exc.code != 421)
                raise
            except aiosmtplib.SMTPRecipientsRefused:
                self._checkin(client, reusable=True)
                raise
            except BaseException:
                client.close()  # timeouts, drops, cancellation: its state is unknown
                raise
            self._checkin(client, reusable=True)

    async def _checkout(self) -> aiosmtplib.SMTP:
        while self._idle:
            client, since = self._idle.pop()
            if not client.is_connected:
                continue
            if time.monotonic() - since < self._config.idle_check_seconds:
                return client
            try:  # the server may have closed an idle connection since
                await client.noop()
                return client
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()
        return await self._connect()

    async def _connect(self) -> aiosmtplib.SMTP:
        config = self._config
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            start_tls=config.starttls,
            tls_context=self._tls_context,
            timeout=config.timeout,
            local_hostname=self._local_hostname,
        )
        await client.connect()  # connects, upgrades with STARTTLS and logs in as configured
        self.opened += 1
        return client

    def _checkin(self, client: aiosmtplib.SMTP, *, reusable: bool) -> None:
        if reusable and client.is_connected:
            self._idle.append((client, time.monotonic()))
        else:
            client.close()

    async def close(self) -> None:
        """Quit every idle connection."""
        idle, self._idle = self._idle, []
        for client, _ in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()
