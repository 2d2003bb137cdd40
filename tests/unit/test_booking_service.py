"""Unit tests of app.booking.service: how a repository's outcome becomes the task's result.

Whether a payment is charged once lives in the PostgreSQL repository and is
tested against it (``tests/integration/test_payment_repository.py``); here the
repository only hands back a given outcome.
"""

from __future__ import annotations

import pytest

from app.booking.repository import Outcome, PaymentNotFound
from app.booking.service import process_payment


class FixedOutcome:
    """A PaymentRepository stand-in that reports one outcome (or raises) and remembers the ids asked."""

    def __init__(self, outcome: Outcome | Exception) -> None:
        self.outcome = outcome
        self.asked: list[int] = []

    def process(self, payment_id: int) -> Outcome:
        self.asked.append(payment_id)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


@pytest.mark.parametrize(
    ("outcome", "result"),
    [
        ("processed", "Payment 7 processed"),
        ("declined", "Payment 7 declined"),
        ("already", "Already processed"),
    ],
)
def test_each_outcome_has_its_result(outcome: Outcome, result: str) -> None:
    # given a repository that reports the outcome
    repository = FixedOutcome(outcome)

    # when payment 7 is processed
    # then the result names it, and the repository was asked once about it
    assert process_payment(repository, 7) == result
    assert repository.asked == [7]


def test_missing_payment_propagates_not_found() -> None:
    # given a repository without payment 404
    repository = FixedOutcome(PaymentNotFound("payment 404 does not exist"))

    # when it is processed
    # then PaymentNotFound reaches the caller
    with pytest.raises(PaymentNotFound, match="404"):
        process_payment(repository, 404)
