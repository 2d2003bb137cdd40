"""Unit tests of app.mail.smtp: AioSmtpSender against an in-process aiosmtpd server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from app.mail.bridge import AsyncioBridge
from app.mail.service import build_message
from app.mail.smtp import AioSmtpSender, SmtpConfig, SmtpPermanentError, SmtpTransientError

HOST = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on loopback nobody listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


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
