"""An SMTP server for the email cases (aiosmtpd) that can be slow, refuse, fail, or go away."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from email import message_from_bytes
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.ports import free_port


class FaultySmtp:
    """Keeps every accepted message; ``delay``, ``fail_first`` and ``refuse`` shape its answers.

    A message counts as delivered only when the server answers 250: a client that
    drops the connection earlier cancels the handler, as a real MTA discards an
    unfinished transaction.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.delay = 0.0  # seconds before answering DATA
        self.fail_first = False  # answer 451 to each recipient's first attempt
        self.refuse: set[str] = set()  # recipients answered 550
        self.delivered: Counter[str] = Counter()  # recipient -> messages accepted
        self.message_ids: Counter[str] = Counter()
        #: (recipient, Message-ID) -> messages accepted: one email, and the copies of it.
        self.copies: Counter[tuple[str, str]] = Counter()
        self._attempted: set[str] = set()
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        recipient = envelope.rcpt_tos[0]
        if self.delay:
            await asyncio.sleep(self.delay)
        with self._lock:
            if recipient in self.refuse:
                return "550 5.1.1 mailbox unavailable"
            if self.fail_first and recipient not in self._attempted:
                self._attempted.add(recipient)
                return "451 4.3.0 try again later"
            mid = str(message_from_bytes(envelope.original_content)["Message-ID"])
            self.delivered[recipient] += 1
            self.message_ids[mid] += 1
            self.copies[recipient, mid] += 1
        return "250 OK"

    def start(self) -> None:
        """Listen on ``self.port`` (the same port after a ``stop``)."""
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        """Stop listening: new connections are refused."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
