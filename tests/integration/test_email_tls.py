"""SMTP over STARTTLS with a real aiosmtpd server and a certificate from a test CA (trustme)."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller

from app import producer
from app.mail.service import build_message
from app.mail.smtp import AioSmtpSender, SmtpConfig, SmtpPermanentError, SmtpTransientError
from tests.support.ports import free_port
from tests.support.worker_process import WorkerProcess


class TlsSink:
    """An SMTP server that refuses mail until the client upgrades with STARTTLS."""

    def __init__(self, ca: trustme.CA) -> None:
        self.messages: list[Message] = []
        self.port = free_port()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self.controller = Controller(
            self, hostname="127.0.0.1", port=self.port, tls_context=context, require_starttls=True
        )

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        assert session.ssl is not None  # only ever over TLS
        self.messages.append(message_from_bytes(envelope.original_content))
        return "250 OK"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_sink(ca: trustme.CA) -> Iterator[TlsSink]:
    sink = TlsSink(ca)
    sink.controller.start()
    yield sink
    sink.controller.stop()


def test_mail_goes_over_starttls_to_a_verified_server(
    start_worker: Callable[..., WorkerProcess], tls_sink: TlsSink, ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    worker = start_worker(
        "email", SMTP_HOST="127.0.0.1", SMTP_PORT=str(tls_sink.port), SMTP_STARTTLS="true",
        SSL_CERT_FILE=str(ca_file),  # the trust store the default TLS context reads
    )  # fmt: skip
    assert producer.enqueue_welcome_email("tls@example.com", "Tess").get(timeout=30).startswith("Welcome")
    assert [m["To"] for m in tls_sink.messages] == ["tls@example.com"]
    worker.stop()


def test_an_untrusted_certificate_is_refused(tls_sink: TlsSink) -> None:
    tls_sink.messages.clear()
    # the machine's trust store does not know the test CA
    sender = AioSmtpSender(SmtpConfig(host="127.0.0.1", port=tls_sink.port, starttls=True, timeout=5))
    message = build_message(
        "Magnetiq <no-reply@magnetiq.example>", "mitm@example.com", "Hi", "Hi", "<p>Hi</p>", "k"
    )
    with pytest.raises(SmtpTransientError, match="CERTIFICATE_VERIFY_FAILED"):
        sender.send(message)
    assert tls_sink.messages == []


def test_plain_text_is_refused_by_a_server_that_requires_tls(tls_sink: TlsSink) -> None:
    sender = AioSmtpSender(SmtpConfig(host="127.0.0.1", port=tls_sink.port, starttls=False, timeout=5))
    message = build_message(
        "Magnetiq <no-reply@magnetiq.example>", "plain@example.com", "Hi", "Hi", "<p>Hi</p>", "k"
    )
    with pytest.raises((SmtpPermanentError, SmtpTransientError), match="530"):
        sender.send(message)
