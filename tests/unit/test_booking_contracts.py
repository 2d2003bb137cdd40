"""Unit tests of the booking contracts, the chained email arguments and the booking producer helpers."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from app import contracts, producer
from app.booking.notices import Notice
from app.contracts import InvalidTaskArguments, validate_arguments
from app.tasks import notify
from app.tasks.notify import EMAIL_TASKS, email_kwargs
from routing.routes import route_task

GOOD_BOOKING = {"reference": "BK-1", "user_id": 1, "slot_id": 2, "amount_cents": 0}


def test_booking_arguments_accept_a_free_booking_with_the_default_currency() -> None:
    model = validate_arguments(contracts.PROCESS_BOOKING, contracts.ProcessBookingArgs, GOOD_BOOKING)
    assert isinstance(model, contracts.ProcessBookingArgs)
    assert (model.amount_cents, model.currency) == (0, "EUR")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_cents": -1}, "amount_cents"),
        ({"amount_cents": "100"}, "amount_cents"),
        ({"amount_cents": 2.5}, "amount_cents"),
        ({"user_id": 0}, "user_id"),
        ({"slot_id": "2"}, "slot_id"),
        ({"currency": "eur"}, "currency"),
        ({"reference": "bad ref\n"}, "reference"),
        ({"reference": "x" * 65}, "reference"),
        ({"extra": 1}, "extra"),
    ],
)
def test_booking_arguments_refuse_bad_values(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidTaskArguments, match=rf"process_booking: invalid arguments: {field}"):
        validate_arguments(
            contracts.PROCESS_BOOKING, contracts.ProcessBookingArgs, {**GOOD_BOOKING, **change}
        )


def test_reminder_day_is_parsed_from_its_json_string() -> None:
    model = validate_arguments(
        contracts.SEND_BOOKING_REMINDERS, contracts.BookingRemindersArgs, {"day": "2031-03-14"}
    )
    assert isinstance(model, contracts.BookingRemindersArgs)
    assert model.day == date(2031, 3, 14)
    with pytest.raises(InvalidTaskArguments, match="day"):
        validate_arguments(
            contracts.SEND_BOOKING_REMINDERS, contracts.BookingRemindersArgs, {"day": "14/03/2031"}
        )


@pytest.mark.parametrize(
    ("model", "values"),
    [
        (contracts.CancelBookingArgs, {"booking_id": -3}),
        (contracts.CancelBookingArgs, {"booking_id": 3, "reason": "line\nbreak"}),
        (contracts.ImportChunkArgs, {"import_id": 1, "chunk": -1}),
        (contracts.ReconcileArgs, {"statement_path": ""}),
    ],
)
def test_other_booking_arguments_refuse_bad_values(
    model: type[contracts.Arguments], values: dict[str, Any]
) -> None:
    with pytest.raises(InvalidTaskArguments):
        validate_arguments("app.tasks.booking_tasks.x", model, values)


def test_producer_refuses_a_negative_amount_before_publishing() -> None:
    with pytest.raises(InvalidTaskArguments, match="amount_cents"):
        producer.enqueue_process_booking("BK-1", 1, 2, -500)


NOTICE = Notice(
    booking_id=7,
    to="ada@example.com",
    name="Ada",
    booking_ref="BK-7",
    resource="Room A",
    starts_at="2031-03-14T09:00:00+00:00",
    ends_at="2031-03-14T10:00:00+00:00",
    reason="slot taken",
)


def test_confirmation_and_reminder_carry_the_interval_and_their_own_key() -> None:
    for kind in ("confirmation", "reminder"):
        assert email_kwargs(kind, NOTICE) == {  # type: ignore[arg-type]
            "to": "ada@example.com",
            "name": "Ada",
            "booking_ref": "BK-7",
            "resource": "Room A",
            "starts_at": "2031-03-14T09:00:00+00:00",
            "ends_at": "2031-03-14T10:00:00+00:00",
            "idempotency_key": f"booking-{kind}:7",
        }


def test_cancellation_carries_the_reason_instead_of_the_end() -> None:
    kwargs = email_kwargs("cancellation", NOTICE)
    assert kwargs["reason"] == "slot taken" and "ends_at" not in kwargs
    assert kwargs["idempotency_key"] == "booking-cancellation:7"


def test_expiry_notice_names_the_start_only_and_fits_its_contract() -> None:
    kwargs = email_kwargs("expired", NOTICE)
    assert kwargs == {
        "to": "ada@example.com",
        "name": "Ada",
        "booking_ref": "BK-7",
        "resource": "Room A",
        "starts_at": "2031-03-14T09:00:00+00:00",
        "idempotency_key": "booking-expired:7",
    }
    validate_arguments(contracts.SEND_BOOKING_EXPIRED, contracts.BookingExpiredArgs, kwargs)


def test_email_tasks_are_the_mail_lanes_names() -> None:
    assert set(EMAIL_TASKS.values()) == {
        "app.tasks.email_tasks.send_booking_confirmation",
        "app.tasks.email_tasks.send_booking_reminder",
        "app.tasks.email_tasks.send_booking_cancellation",
        "app.tasks.email_tasks.send_booking_expired",
    }
    # transactional ones on the email queue, reminders (sent by the thousand) in the bulk lane
    for name in EMAIL_TASKS.values():
        route = route_task(name, (), {}, {})
        lane = "bulk" if name == "app.tasks.email_tasks.send_booking_reminder" else "email"
        assert route is not None and route["queue"] == lane


@pytest.mark.parametrize("count", [1, 3], ids=["one", "group"])
def test_follow_up_emails_are_validated_with_the_tasks_own_model_before_publishing(count: int) -> None:
    # given booking email calls whose address is malformed
    calls = [{"to": "not-an-address", "name": "Ada", "booking_ref": "BK-1", "resource": "Room"}] * count

    # when a booking task publishes them, then the contract refuses them before any connection
    with pytest.raises(InvalidTaskArguments, match="to"):
        notify.publish(contracts.SEND_BOOKING_EXPIRED, calls)
