"""The mail service over the PostgreSQL delivery ledger: each key is sent once, whatever comes again.

The rules live in ``SqlDeliveryLedger``'s SQL (the claim's ``ON CONFLICT ...
WHERE``, the ``sending``-only failure update) and in ``MailService`` (claim
before SMTP, record after); the SMTP sender is an in-memory stand-in because
sending itself is not the rule under test here.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import text

from app.db import engine_for
from app.mail import emails
from app.mail.errors import DeliveryBusy
from app.mail.ledger import SqlDeliveryLedger
from app.mail.render import Renderer
from app.mail.service import InvalidEmail, MailService, message_id
from app.mail.smtp import SmtpPermanentError, SmtpTransientError
from app.settings import get_settings
from tests.integration.booking_helpers import rows, scalar

SENDER = "Magnetiq <no-reply@magnetiq.local>"
#: Seconds a ``sending`` row is left to its attempt in these tests.
LEASE = 60


class ScriptedSender:
    """An EmailSender that raises the planned errors, then keeps what it is given."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.sent: list[EmailMessage] = []
        self.calls = 0

    def send(self, message: EmailMessage) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append(message)


class HeldSender(ScriptedSender):
    """An EmailSender whose first send waits for ``release`` (an SMTP server slow to answer it)."""

    def __init__(self, *errors: BaseException) -> None:
        super().__init__(*errors)
        self.entered = threading.Event()
        self.release = threading.Event()

    def send(self, message: EmailMessage) -> None:
        if not self.entered.is_set():
            self.entered.set()
            if not self.release.wait(30):
                raise AssertionError("the held send was never released")
        super().send(message)


def _ledger(lease: float = LEASE) -> SqlDeliveryLedger:
    return SqlDeliveryLedger(engine_for(get_settings().database_url, autocommit=True), lease_seconds=lease)


def _service(sender: ScriptedSender, lease: float = LEASE) -> MailService:
    return MailService(sender, Renderer(), SENDER, _ledger(lease))


def _welcome(service: MailService, key: str) -> str:
    return service.send_welcome("ada@example.com", "Ada", key=key)


def _sent(key: str) -> str:
    return f"Welcome email sent {message_id(key)}"


def _already(key: str) -> str:
    return f"Welcome email already sent {message_id(key)}"


def _age(database: Any, key: str, seconds: float) -> None:
    """Make the row of ``key`` look ``seconds`` old (its attempt went quiet that long ago)."""
    with database.begin() as db:
        db.execute(
            text(
                "UPDATE email_deliveries SET updated_at = now() - make_interval(secs => :age) "
                "WHERE idempotency_key = :k"
            ),
            {"age": seconds, "k": key},
        )


def _row(database: Any, key: str) -> Any:
    (row,) = rows(
        database,
        "SELECT status, attempts, last_error, template, message_id, sent_at "
        "FROM email_deliveries WHERE idempotency_key = :k",
        k=key,
    )
    return row


def test_a_key_already_sent_is_not_sent_again(database: Any) -> None:
    # given the welcome email sent for key k1
    sender = ScriptedSender()
    first = _welcome(_service(sender), "k1")

    # when the same key comes again (a redelivery, a retry, a second publish), through another service
    again = _welcome(_service(sender), "k1")

    # then nothing more went out, the summary says so, and the ledger row records the one send
    assert len(sender.sent) == 1
    assert first == _sent("k1")
    assert again == _already("k1")
    stored = _row(database, "k1")
    assert (stored.status, stored.attempts, stored.template) == ("sent", 1, "welcome")
    assert stored.message_id == message_id("k1") and stored.sent_at is not None


def test_a_transient_failure_releases_the_key_for_the_retry(database: Any) -> None:
    # given a first attempt that fails with a 451
    sender = ScriptedSender(SmtpTransientError("SMTP 451: later"))
    with pytest.raises(SmtpTransientError):
        _welcome(_service(sender), "k2")
    stored = _row(database, "k2")
    assert (stored.status, stored.attempts, stored.last_error) == ("pending", 1, "SMTP 451: later")

    # when the retry comes
    _welcome(_service(sender), "k2")

    # then it is sent once, on the second attempt, and the old error is cleared
    assert len(sender.sent) == 1
    stored = _row(database, "k2")
    assert (stored.status, stored.attempts, stored.last_error) == ("sent", 2, None)


def test_an_interrupted_send_releases_the_key_for_the_retry(database: Any) -> None:
    # given a first attempt cut off by an error that is no SMTP reply
    sender = ScriptedSender(ConnectionResetError("reset mid-send"))
    with pytest.raises(ConnectionResetError):
        _welcome(_service(sender), "k-cut")
    assert (_row(database, "k-cut").status, _row(database, "k-cut").last_error) == ("pending", "interrupted")

    # when the retry comes
    # then it sends
    assert _welcome(_service(sender), "k-cut") == _sent("k-cut")
    assert len(sender.sent) == 1


def test_a_permanent_refusal_is_final(database: Any) -> None:
    # given a server that refused the message for good
    sender = ScriptedSender(SmtpPermanentError("SMTP 550: no such user"))
    with pytest.raises(SmtpPermanentError, match="550"):
        _welcome(_service(sender), "k3")

    # when the same key comes again
    # then it is refused with the stored reason, without another SMTP attempt
    with pytest.raises(SmtpPermanentError, match="refused by the server earlier: SMTP 550"):
        _welcome(_service(sender), "k3")
    assert sender.calls == 1
    stored = _row(database, "k3")
    assert (stored.status, stored.attempts, stored.last_error) == ("failed", 1, "SMTP 550: no such user")


def test_a_key_another_attempt_is_sending_is_busy_until_it_is_sent(database: Any) -> None:
    # given one attempt in the middle of its SMTP send
    sender = HeldSender()
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            first = pool.submit(_welcome, _service(sender), "k4")
            assert sender.entered.wait(10), "the first attempt never reached SMTP"

            # when a second attempt (another process, another connection) sends the same key
            with pytest.raises(DeliveryBusy) as busy:
                _welcome(_service(sender), "k4")
        finally:
            sender.release.set()
        sent = first.result(timeout=30)

    # then it backs off for the rest of the first attempt's lease; the first sends, once
    assert 1 <= busy.value.retry_in <= LEASE
    assert sent == _sent("k4")
    assert _welcome(_service(sender), "k4") == _already("k4")
    assert len(sender.sent) == 1


def test_many_attempts_racing_for_one_key_send_it_once(database: Any) -> None:
    # given ten attempts of one email, started together
    sender = ScriptedSender()
    start = threading.Barrier(10)

    def attempt(_: int) -> str:
        service = _service(sender)
        start.wait(10)
        try:
            return _welcome(service, "k-race")
        except DeliveryBusy:
            return "busy"

    # when they all send
    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(attempt, range(10)))

    # then exactly one reached SMTP; the others were busy or found it sent
    assert outcomes.count(_sent("k-race")) == 1
    assert set(outcomes) <= {_sent("k-race"), "busy", _already("k-race")}
    assert len(sender.sent) == 1
    assert _row(database, "k-race").attempts == 1


def test_a_late_failure_of_a_taken_over_attempt_never_unsends_the_key(database: Any) -> None:
    # given an attempt that claimed k5 and then stalled past its lease
    stalled = _ledger()
    assert stalled.claim("k5", "welcome", message_id("k5"), "t-stalled").state == "send"
    _age(database, "k5", LEASE + 60)
    # and a redelivery that took the key over and sent it
    sender = ScriptedSender()
    _welcome(_service(sender), "k5")

    # when the stalled attempt finally reports its failure
    stalled.record_failure("k5", "SMTP 451: later", permanent=False)

    # then the key stays sent and a further delivery sends nothing
    assert _row(database, "k5").status == "sent"
    assert _welcome(_service(sender), "k5") == _already("k5")
    assert len(sender.sent) == 1


def test_an_invalid_recipient_never_reaches_the_ledger_or_smtp(database: Any) -> None:
    # given a recipient with a header injection
    sender = ScriptedSender()
    bad = emails.password_reset(
        "ada@example.com\r\nBcc: eve@example.com", "Ada", "https://magnetiq.example/reset", 30, "k6"
    )

    # when it is sent
    with pytest.raises(InvalidEmail):
        _service(sender).send(bad)

    # then nothing was claimed or sent
    assert scalar(database, "SELECT count(*) FROM email_deliveries") == 0
    assert sender.calls == 0


def test_a_busy_key_is_taken_over_once_its_attempt_is_past_the_lease(database: Any) -> None:
    # given an attempt that claimed k7 and died without a word (its row stays `sending`)
    _ledger().claim("k7", "welcome", message_id("k7"), "t-dead")
    sender = ScriptedSender()
    with pytest.raises(DeliveryBusy):
        _welcome(_service(sender), "k7")

    # when the lease has run out
    _age(database, "k7", LEASE + 1)

    # then the next attempt sends it, once
    assert _welcome(_service(sender), "k7") == _sent("k7")
    stored = _row(database, "k7")
    assert (len(sender.sent), stored.status, stored.attempts) == (1, "sent", 2)


def test_a_stalled_attempt_failing_late_never_frees_a_key_another_attempt_is_sending(database: Any) -> None:
    # given attempt A stuck mid-send past its lease, and attempt B that took the key over and is sending
    stalled, taking_over = HeldSender(SmtpTransientError("SMTP 451: later")), HeldSender()
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            a = pool.submit(_welcome, _service(stalled), "k8")
            assert stalled.entered.wait(10), "attempt A never reached SMTP"
            _age(database, "k8", LEASE + 60)
            b = pool.submit(_welcome, _service(taking_over), "k8")
            assert taking_over.entered.wait(10), "attempt B never took the key over"

            # when A's send finally fails, and a third attempt comes while B is still sending
            stalled.release.set()
            with pytest.raises(SmtpTransientError):
                a.result(timeout=30)
            third = ScriptedSender()
            with pytest.raises(DeliveryBusy):
                _welcome(_service(third), "k8")
        finally:
            stalled.release.set()
            taking_over.release.set()
        sent = b.result(timeout=30)

    # then A's failure left B's claim alone: the third attempt backed off and only B sent
    assert third.calls == 0
    assert sent == _sent("k8")
    assert (len(stalled.sent), len(taking_over.sent)) == (0, 1)
    assert (_row(database, "k8").status, _row(database, "k8").attempts) == ("sent", 2)
