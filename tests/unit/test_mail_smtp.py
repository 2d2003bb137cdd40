"""Unit tests of app.mail.smtp: AioSmtpSender against an in-process aiosmtpd server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from app.mail.bridge import AsyncioBridge
from app.mail.service import build_message
from app.mail.smtp import AioSmtpSender, SmtpConfig, SmtpPermanentError, SmtpTransientError
from tests.support.ports import free_port
from tests.support.smtp_server import ScriptedSmtp

HOST = "127.0.0.1"


class RecordingHandler:
    """Accepts every message and keeps its envelope."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        self.arrived.set()
        return "250 Message accepted for delivery"


class RefusingHandler:
    """Answers one SMTP command (RCPT or DATA) with a fixed reply."""

    def __init__(self, command: str, reply: str) -> None:
        self.command = command
        self.reply = reply

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.command == "RCPT":
            return self.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return self.reply if self.command == "DATA" else "250 OK"


@pytest.fixture(scope="module")
def bridge() -> AsyncioBridge:
    """One bridge (one loop thread) for the module, as in a worker process."""
    return AsyncioBridge()


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start aiosmtpd servers on free loopback ports; stop them after the test."""
    controllers: list[Controller] = []

    def start(handler: Any) -> int:
        port = free_port()
        controller = Controller(handler, hostname=HOST, port=port, ready_timeout=5)
        controller.start()
        controllers.append(controller)
        return port

    yield start
    for controller in controllers:
        controller.stop()


def sender_for(port: int, bridge: AsyncioBridge) -> AioSmtpSender:
    return AioSmtpSender(SmtpConfig(host=HOST, port=port, timeout=2.0), bridge=bridge)


def welcome() -> EmailMessage:
    return build_message(
        "Magnetiq <no-reply@magnetiq.example>",
        "ada@example.com",
        "Welcome to Magnetiq, Ada!",
        "Hello Ada,",
        "<h1>Hello Ada,</h1>",
        key="smtp-test",
    )


def test_message_arrives(serve: Any, bridge: AsyncioBridge) -> None:
    # given a running SMTP server
    handler = RecordingHandler()
    sender = sender_for(serve(handler), bridge)

    # when a message is sent
    sender.send(welcome())

    # then the server received it for the right recipient
    assert handler.arrived.wait(timeout=5)
    (envelope,) = handler.envelopes
    assert envelope.rcpt_tos == ["ada@example.com"]
    assert envelope.mail_from == "no-reply@magnetiq.example"
    received = message_from_bytes(envelope.original_content)
    assert received["Subject"] == "Welcome to Magnetiq, Ada!"
    assert received["Message-ID"] == welcome()["Message-ID"]


@pytest.mark.parametrize(
    ("command", "reply", "expected"),
    [
        pytest.param(
            "RCPT",
            "550 no such user",
            SmtpPermanentError,
            id="rcpt-550",
        ),
        pytest.param("DATA", "550 no such user", SmtpPermanentError, id="data-550"),
        pytest.param("RCPT", "451 try later", SmtpTransientError, id="rcpt-451"),
        pytest.param("DATA", "451 try later", SmtpTransientError, id="data-451"),
    ],
)
def test_server_replies_are_classified(
    serve: Any, bridge: AsyncioBridge, command: str, reply: str, expected: type[Exception]
) -> None:
    # given a server answering one command with an error reply
    sender = sender_for(serve(RefusingHandler(command, reply)), bridge)

    # when a message is sent
    # then 5xx is permanent and 4xx transient, with the code in the message
    with pytest.raises(expected, match=reply.split()[0]):
        sender.send(welcome())


def test_closed_port_is_transient(bridge: AsyncioBridge) -> None:
    # given a port nothing listens on
    sender = sender_for(free_port(), bridge)

    # when a message is sent
    # then the failure is transient (the server may come back)
    with pytest.raises(SmtpTransientError, match="SMTP unavailable"):
        sender.send(welcome())


def test_refused_recipient_error_carries_no_address(serve: Any, bridge: AsyncioBridge) -> None:
    # given a server that defers the recipient (a reply that names no address)
    sender = sender_for(serve(RefusingHandler("RCPT", "451 try later")), bridge)

    # when a message is sent
    with pytest.raises(SmtpTransientError) as caught:
        sender.send(welcome())

    # then the error does not carry the recipient's address (personal data)
    assert "ada@example.com" not in str(caught.value)


@pytest.fixture
def scripted() -> Iterator[Any]:
    """Start scripted SMTP servers (tests.support.smtp_server); stop them after the test."""
    servers: list[ScriptedSmtp] = []

    def start(delay: float = 0.0) -> ScriptedSmtp:
        server = ScriptedSmtp(delay).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def message(i: int) -> EmailMessage:
    return build_message(
        "Magnetiq <no-reply@magnetiq.example>", f"u{i}@example.com", "Hi", "t", "<p>h</p>", f"k{i}"
    )


def send_all(sender: AioSmtpSender, count: int) -> None:
    """Send ``count`` messages from ``count`` threads at once."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(lambda i: sender.send(message(i)), range(count)))


def test_one_connection_is_reused_for_sequential_sends(scripted: Any, bridge: AsyncioBridge) -> None:
    # given a sender and a server
    server = scripted()
    sender = AioSmtpSender(SmtpConfig(host=HOST, port=server.port, timeout=2.0), bridge=bridge)

    # when five messages are sent one after another
    for i in range(5):
        sender.send(message(i))

    # then all arrived over the one connection the pool opened
    assert len(server.handler.messages) == 5
    assert server.handler.connections == sender.pool().opened == 1
    sender.close()


def test_open_connections_never_exceed_the_cap(scripted: Any, bridge: AsyncioBridge) -> None:
    # given a server that holds each message 0.2 s and a cap of three connections
    server = scripted(delay=0.2)
    config = SmtpConfig(host=HOST, port=server.port, timeout=5.0, max_connections=3)
    sender = AioSmtpSender(config, bridge=bridge)

    # when twelve messages are sent at once
    send_all(sender, 12)

    # then every one arrived, at most three at a time, over three connections
    assert len(server.handler.messages) == 12
    assert server.handler.peak_in_flight == 3
    assert server.handler.connections == sender.pool().opened == 3
    sender.close()


def test_rate_limit_spaces_the_sends(scripted: Any, bridge: AsyncioBridge) -> None:
    # given a limit of 20 sends per second
    server = scripted()
    config = SmtpConfig(host=HOST, port=server.port, timeout=5.0, rate_per_second=20)
    sender = AioSmtpSender(config, bridge=bridge)

    # when ten messages are sent at once
    send_all(sender, 10)

    # then they arrived spread over at least nine intervals of 1/20 s (the
    # limiter's guarantee, with slack for scheduling: never faster than that)
    arrived = sorted(server.handler.accepted_at)
    assert len(arrived) == 10
    assert arrived[-1] - arrived[0] >= 9 / 20 * 0.8
    sender.close()


def test_421_closes_the_connection_and_the_next_send_reconnects(scripted: Any, bridge: AsyncioBridge) -> None:
    # given a server that answers the first message with 421 (closing)
    server = scripted()
    server.handler.plan = ["421"]
    sender = AioSmtpSender(SmtpConfig(host=HOST, port=server.port, timeout=2.0), bridge=bridge)

    # when two messages are sent
    with pytest.raises(SmtpTransientError, match="421"):
        sender.send(message(1))
    sender.send(message(2))

    # then the second went over a new connection
    assert server.handler.connections == 2
    assert len(server.handler.messages) == 1
    sender.close()


def test_a_server_slower_than_the_timeout_is_transient(scripted: Any, bridge: AsyncioBridge) -> None:
    # given a server that holds DATA for 3 s and a 0.3 s command timeout
    server = scripted(delay=3.0)
    sender = AioSmtpSender(SmtpConfig(host=HOST, port=server.port, timeout=0.3), bridge=bridge)

    # when a message is sent
    # then it fails as transient (a retry may succeed), not as permanent
    with pytest.raises(SmtpTransientError, match="Timeout"):
        sender.send(message(1))


def test_connection_dropped_after_data_is_transient(scripted: Any, bridge: AsyncioBridge) -> None:
    # given a server that takes the message, then drops the connection before replying
    server = scripted()
    server.handler.plan = ["drop"]
    sender = AioSmtpSender(SmtpConfig(host=HOST, port=server.port, timeout=2.0), bridge=bridge)

    # when the message is sent
    with pytest.raises(SmtpTransientError, match="SMTPServerDisconnected"):
        sender.send(message(1))

    # then the server has it although the sender could not know (the Message-ID
    # lets receivers drop the copy a retry brings)
    assert [m["Message-ID"] for m in server.handler.messages] == [message(1)["Message-ID"]]
