"""Unit tests of app.booking.service: idempotent payment processing over a fake repository."""

from __future__ import annotations

import pytest

from app.booking.repository import Outcome, PaymentNotFound
from app.booking.service import ALREADY_PROCESSED, process_payment


class InMemoryPayments:
    """A PaymentRepository keeping payment statuses in a dict."""

    def __init__(self, statuses: dict[int, str], declines: frozenset[int] = frozenset()) -> None:
        self.statuses = dict(statuses)
        self.declines = declines

    def process(self, payment_id: int) -> Outcome:
        status = self.statuses.get(payment_id)
        if status is None:
            raise PaymentNotFound(f"payment {payment_id} does not exist")
        if status != "pending":
            return "already"
        if payment_id in self.declines:
            self.statuses[payment_id] = "failed"
            return "declined"
        self.statuses[payment_id] = "processed"
        return "processed"


def test_first_call_processes_the_payment() -> None:
    # given a pending payment
    payments = InMemoryPayments({7: "pending"})

    # when it is processed
    result = process_payment(payments, 7)

    # then it is processed and says so
    assert result == "Payment 7 processed"
    assert payments.statuses[7] == "processed"


def test_second_call_changes_nothing() -> None:
    # given a payment processed once
    payments = InMemoryPayments({7: "pending"})
    process_payment(payments, 7)

    # when it is processed again
    result = process_payment(payments, 7)

    # then the repeat is reported and the state is unchanged
    assert result == ALREADY_PROCESSED == "Already processed"
    assert payments.statuses == {7: "processed"}


def test_other_payments_are_untouched() -> None:
    # given two pending payments
    payments = InMemoryPayments({1: "pending", 2: "pending"})

    # when one is processed
    process_payment(payments, 1)

    # then the other is still pending
    assert payments.statuses == {1: "processed", 2: "pending"}


def test_missing_payment_propagates_not_found() -> None:
    # given no payment 404
    payments = InMemoryPayments({})

    # when it is processed
    # then PaymentNotFound reaches the caller
    with pytest.raises(PaymentNotFound, match="404"):
        process_payment(payments, 404)


def test_declined_payment_is_reported_then_final() -> None:
    # given a pending payment the provider will decline
    payments = InMemoryPayments({3: "pending"}, declines=frozenset({3}))

    # when it is processed twice
    first, second = process_payment(payments, 3), process_payment(payments, 3)

    # then the decline is reported once and the payment stays failed
    assert (first, second) == ("Payment 3 declined", "Already processed")
    assert payments.statuses == {3: "failed"}
