"""Real SMTP servers (aiosmtpd) for the tests: one whose replies a test scripts, and a plain sink.

``ScriptedSmtp`` answers as planned: accept, 4xx, 5xx, delay, drop. The tests run
it in-process, the bench as a process of its own
(``python -m tests.support.smtp_server --port P --delay 0.2``). Each DATA takes
the next planned action (then ``default``); the server counts connections,
attempts and the peak number of messages it held at once. ``SmtpSink`` accepts
everything and keeps it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import threading
import time
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.ports import free_port
from tests.support.waiting import wait_until

#: Actions: a reply code to answer with, "accept" (250), or "drop" (close the
#: connection after the message arrived, before replying: the one case where
#: the server has the mail and the client cannot know).
#: Seconds between rewrites of the bench server's ``--stats`` file.
STATS_INTERVAL = 0.02

REPLIES = {
    "accept": "250 2.0.0 OK",
    "421": "421 4.3.2 Service shutting down",
    "451": "451 4.3.0 Try again later",
    "550": "550 5.1.1 Mailbox unavailable",
}


class ScriptedHandler:
    """aiosmtpd handler: follows ``plan``, keeps what it accepted, counts what happened."""

    def __init__(self, delay: float = 0.0, default: str = "accept") -> None:
        self.delay = delay
        self.default = default
        self.plan: list[str] = []
        #: The raw bytes of every accepted message (parsed only when ``messages`` is read).
        self.received: list[bytes] = []
        self._parsed: list[Message] = []
        #: DATA commands seen (accepted or not).
        self.attempts = 0
        #: EHLO/HELO greetings seen: one per connection (plus one after STARTTLS).
        self.connections = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        #: time.time() of each accepted message.
        self.accepted_at: list[float] = []
        self._lock = threading.Lock()

    @property
    def messages(self) -> list[Message]:
        """The accepted messages, parsed on first read (parsing each on arrival costs the bench CPU)."""
        with self._lock:
            parsed, new = self._parsed, self.received[len(self._parsed) :]
            parsed.extend(message_from_bytes(raw, policy=default_policy) for raw in new)
            return list(parsed)

    def stats(self) -> tuple[int, float, int]:
        """(messages accepted, time.time() of the last, connections)."""
        with self._lock:
            last = self.accepted_at[-1] if self.accepted_at else 0.0
            return len(self.received), last, self.connections

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self._lock:
            self.connections += 1
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.attempts += 1
            action = self.plan.pop(0) if self.plan else self.default
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            with self._lock:
                self.in_flight -= 1
        if action in ("accept", "drop"):
            with self._lock:
                self.received.append(envelope.original_content)
                self.accepted_at.append(time.time())
        if action == "drop":
            server.transport.abort()
            return "250 2.0.0 OK (never delivered to the client)"
        return REPLIES[action]

    def reset(self, delay: float = 0.0, default: str = "accept") -> None:
        """Forget everything seen and script anew."""
        with self._lock:
            self.delay, self.default, self.plan = delay, default, []
            self.received.clear()
            self._parsed.clear()
            self.accepted_at.clear()
            self.attempts = self.connections = self.in_flight = self.peak_in_flight = 0


class ScriptedSmtp:
    """A ``ScriptedHandler`` served on a free loopback port in a background thread."""

    def __init__(self, delay: float = 0.0, default: str = "accept") -> None:
        self.handler = ScriptedHandler(delay, default)
        self.port = free_port()
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=10)

    def start(self) -> ScriptedSmtp:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


class SmtpSink:
    """A real SMTP server (aiosmtpd) that accepts everything and keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.original_content))
        return "250 OK"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def wait_for(self, count: int, timeout: float = 30) -> list[Message]:
        """Wait until at least ``count`` messages arrived."""
        wait_until(lambda: len(self.messages) >= count, timeout, f"{count} emails")
        return self.messages


def main() -> None:
    """Serve until SIGTERM; keep the accepted count and the last accept time in ``--stats``.

    The file is rewritten at most every ``STATS_INTERVAL`` seconds, not after
    each message: the last accept time it holds is exact either way.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--stats", type=Path, required=True, help="file rewritten after each accept")
    args = parser.parse_args()
    handler = ScriptedHandler(args.delay)
    controller = Controller(handler, hostname="127.0.0.1", port=args.port, ready_timeout=10)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    written = 0
    while not stop.wait(STATS_INTERVAL):
        count, last, connections = handler.stats()
        if count != written:
            tmp = args.stats.with_suffix(".tmp")
            tmp.write_text(f"{count} {last!r} {connections}")
            os.replace(tmp, args.stats)
            written = count
    controller.stop()


if __name__ == "__main__":
    main()
