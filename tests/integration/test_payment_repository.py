"""Payments on real PostgreSQL and the real HTTP provider: charged once, final once decided (no broker).

The rules live in ``SqlPaymentRepository`` (status check under a row lock) and
in ``charge_payment`` (one provider idempotency key per payment); the provider's
ledger counts what was really charged.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text

from app.booking.provider import HttpPaymentProvider, PaymentProviderUnavailable
from app.booking.repository import PaymentNotFound, SqlPaymentRepository
from app.booking.service import ALREADY_PROCESSED, process_payment
from app.tasks import booking_tasks, resources
from tests.integration.booking_helpers import rows, scalar
from tests.support.payment_provider import Ledger
from tests.support.waiting import wait_until


@pytest.fixture
def provider(payment_provider: tuple[str, Ledger]) -> HttpPaymentProvider:
    return HttpPaymentProvider(payment_provider[0], timeout=5)


@pytest.fixture
def repository(database: Any, provider: HttpPaymentProvider) -> SqlPaymentRepository:
    return SqlPaymentRepository(database, provider)


def _payment(database: Any, amount_cents: int = 1200, status: str = "pending") -> int:
    with database.begin() as db:
        return int(
            db.execute(
                text("INSERT INTO payments (amount_cents, status) VALUES (:a, :s) RETURNING id"),
                {"a": amount_cents, "s": status},
            ).scalar_one()
        )


def _stored(database: Any, payment_id: int) -> Any:
    (row,) = rows(
        database,
        "SELECT status, provider_reference, failure_reason, processed_at FROM payments WHERE id = :id",
        id=payment_id,
    )
    return row


def test_first_call_charges_the_payment_once_and_records_the_charge(
    database: Any, repository: SqlPaymentRepository, ledger: Ledger
) -> None:
    # given a pending payment
    payment_id = _payment(database, amount_cents=1250)

    # when it is processed
    result = process_payment(repository, payment_id)

    # then the provider made one charge of its amount, and the row records that charge
    assert result == f"Payment {payment_id} processed"
    ((reference, charge),) = ledger.charges.items()
    assert (charge["amount_cents"], charge["currency"]) == (1250, "EUR")
    stored = _stored(database, payment_id)
    assert (stored.status, stored.provider_reference) == ("processed", reference)
    assert stored.processed_at is not None


def test_second_call_is_already_processed_and_never_reaches_the_provider(
    database: Any, repository: SqlPaymentRepository, ledger: Ledger
) -> None:
    # given a payment processed once
    payment_id = _payment(database)
    process_payment(repository, payment_id)
    before = _stored(database, payment_id)

    # when it is processed again (a redelivery)
    result = process_payment(repository, payment_id)

    # then the repeat is reported, nothing changed, and the provider saw one request
    assert result == ALREADY_PROCESSED == "Already processed"
    assert _stored(database, payment_id) == before
    assert (len(ledger.charges), ledger.requests) == (1, 1)


@pytest.mark.parametrize("status", ["processed", "failed", "refunded"])
def test_a_final_payment_is_left_alone(
    database: Any, repository: SqlPaymentRepository, ledger: Ledger, status: str
) -> None:
    # given a payment whose status is final
    payment_id = _payment(database, status=status)

    # when it is processed
    # then nothing is charged and the status stays
    assert process_payment(repository, payment_id) == ALREADY_PROCESSED
    assert _stored(database, payment_id).status == status
    assert ledger.requests == 0


def test_other_payments_are_untouched(
    database: Any, repository: SqlPaymentRepository, ledger: Ledger
) -> None:
    # given two pending payments
    first, second = _payment(database), _payment(database)

    # when one is processed
    process_payment(repository, first)

    # then only that one was charged
    assert (_stored(database, first).status, _stored(database, second).status) == ("processed", "pending")
    assert len(ledger.charges) == 1


def test_a_missing_payment_is_not_found_and_charges_nothing(
    database: Any, repository: SqlPaymentRepository, ledger: Ledger
) -> None:
    # given no payment 404
    # when it is processed
    # then PaymentNotFound reaches the caller and the provider was never asked
    with pytest.raises(PaymentNotFound, match="payment 404 does not exist"):
        process_payment(repository, 404)
    assert ledger.requests == 0


def test_a_declined_payment_is_reported_once_then_final(
    database: Any, repository: SqlPaymentRepository, ledger: Ledger
) -> None:
    # given a pending payment the provider declines
    payment_id = _payment(database, amount_cents=4002)
    ledger.declined.add(4002)

    # when it is processed twice
    first, second = process_payment(repository, payment_id), process_payment(repository, payment_id)

    # then the decline is reported once, stored with its reason, and never retried at the provider
    assert (first, second) == (f"Payment {payment_id} declined", ALREADY_PROCESSED)
    stored = _stored(database, payment_id)
    assert stored.status == "failed"
    assert "HTTP 402" in stored.failure_reason
    assert ledger.charges == {}
    assert ledger.requests == 1


def test_a_provider_outage_leaves_the_payment_pending_for_the_retry(
    database: Any, repository: SqlPaymentRepository, ledger: Ledger
) -> None:
    # given a provider that answers 503 once
    payment_id = _payment(database)
    ledger.unavailable = 1

    # when the payment is processed, fails, and is retried
    with pytest.raises(PaymentProviderUnavailable, match="HTTP 503"):
        process_payment(repository, payment_id)
    assert _stored(database, payment_id).status == "pending"
    result = process_payment(repository, payment_id)

    # then the retry charges it, once
    assert result == f"Payment {payment_id} processed"
    assert len(ledger.charges) == 1


def test_a_charge_whose_reply_was_lost_is_not_charged_again(
    database: Any, payment_provider: tuple[str, Ledger], ledger: Ledger
) -> None:
    # given a provider that makes the next charge but holds its reply past the client's timeout
    payment_id = _payment(database)
    released = threading.Event()
    ledger.hold_next_charge = released
    impatient = SqlPaymentRepository(database, HttpPaymentProvider(payment_provider[0], timeout=0.5))

    # when the first attempt times out and the retry comes after the reply is gone
    try:
        with pytest.raises(PaymentProviderUnavailable):
            process_payment(impatient, payment_id)
    finally:
        released.set()
    assert _stored(database, payment_id).status == "pending"
    result = process_payment(impatient, payment_id)

    # then the retry gets the first charge back under the same key: money moved once
    assert result == f"Payment {payment_id} processed"
    ((reference, _charge),) = ledger.charges.items()
    assert _stored(database, payment_id).provider_reference == reference


def _lock_waiters(database: Any) -> int:
    return int(
        scalar(
            database,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
    )


def test_two_sessions_racing_for_one_payment_charge_it_once(
    database: Any, repository: SqlPaymentRepository, ledger: Ledger
) -> None:
    # given a first session that has charged the payment and waits for the provider's reply
    payment_id = _payment(database)
    released = threading.Event()
    ledger.hold_next_charge = released
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            first = pool.submit(process_payment, repository, payment_id)
            wait_until(lambda: ledger.held == 1, 10, "the first charge to reach the provider")

            # when a second session processes the same payment meanwhile
            second: Future[str] = pool.submit(process_payment, repository, payment_id)
            wait_until(
                lambda: second.done() or _lock_waiters(database) == 1, 10, "the second session to block"
            )
        finally:
            released.set()
        outcomes = sorted([first.result(timeout=30), second.result(timeout=30)])

    # then the second waited for the first's commit and found the payment processed
    assert outcomes == [ALREADY_PROCESSED, f"Payment {payment_id} processed"]
    assert (len(ledger.charges), ledger.requests) == (1, 1)


def test_the_task_charges_through_the_database_once(
    database: Any, provider: HttpPaymentProvider, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the task wired to the tests' provider (its engine is the tests' database)
    monkeypatch.setattr(resources, "payment_provider", lambda: provider)
    payment_id = _payment(database)

    # when the task body runs twice in-process, positional then by keyword
    first = booking_tasks.process_payment(payment_id)
    second = booking_tasks.process_payment(payment_id=payment_id)

    # then it charged once, then reported the repeat
    assert (first, second) == (f"Payment {payment_id} processed", "Already processed")
    assert _stored(database, payment_id).status == "processed"
    assert (len(ledger.charges), ledger.requests) == (1, 1)
