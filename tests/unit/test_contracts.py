"""Unit tests of app.contracts: strict task arguments and errors that carry no user data."""

from __future__ import annotations

from typing import Any

import pytest

from app.contracts import (
    CLEANUP_OLD_SESSIONS,
    PROCESS_PAYMENT,
    SEND_WELCOME_EMAIL,
    InvalidTaskArguments,
    NoArgs,
    ProcessPaymentArgs,
    WelcomeEmailArgs,
    validate_arguments,
)

#: A value no message should ever echo: it stands for personal data.
DISTINCTIVE = "Zq7-personal-data-9Xw"


def test_accepts_good_welcome_arguments() -> None:
    # given well-formed arguments
    values = {"user_email": "ada@example.com", "user_name": "Ada Lovelace"}

    # when they are validated
    model = validate_arguments(SEND_WELCOME_EMAIL, WelcomeEmailArgs, values)

    # then the model carries them
    assert isinstance(model, WelcomeEmailArgs)
    assert (model.user_email, model.user_name) == ("ada@example.com", "Ada Lovelace")


def test_accepts_good_payment_and_empty_arguments() -> None:
    # given a positive payment id and an empty argument set
    # when they are validated
    payment = validate_arguments(PROCESS_PAYMENT, ProcessPaymentArgs, {"payment_id": 42})
    nothing = validate_arguments(CLEANUP_OLD_SESSIONS, NoArgs, {})

    # then both pass
    assert payment == ProcessPaymentArgs(payment_id=42)
    assert nothing == NoArgs()


@pytest.mark.parametrize(
    ("model", "values", "field"),
    [
        (ProcessPaymentArgs, {"payment_id": "12"}, "payment_id"),
        (ProcessPaymentArgs, {"payment_id": 12.0}, "payment_id"),
        (ProcessPaymentArgs, {"payment_id": True}, "payment_id"),
        (ProcessPaymentArgs, {"payment_id": None}, "payment_id"),
        (WelcomeEmailArgs, {"user_email": "ada@example.com", "user_name": 7}, "user_name"),
        (WelcomeEmailArgs, {"user_email": b"ada@example.com", "user_name": "Ada"}, "user_email"),
    ],
)
def test_rejects_wrong_types_strictly(model: Any, values: dict[str, Any], field: str) -> None:
    # given a value of the wrong JSON type (no coercion: "12" is not an int)
    # when it is validated
    with pytest.raises(InvalidTaskArguments) as caught:
        validate_arguments("some.task", model, values)

    # then the error names the task and the field
    assert "some.task" in str(caught.value)
    assert field in str(caught.value)


@pytest.mark.parametrize("payment_id", [0, -1, -(2**40)])
def test_rejects_non_positive_payment_ids(payment_id: int) -> None:
    # given a payment id that cannot exist
    # when it is validated
    # then it is refused, naming the field
    with pytest.raises(InvalidTaskArguments, match="payment_id"):
        validate_arguments(PROCESS_PAYMENT, ProcessPaymentArgs, {"payment_id": payment_id})


def test_rejects_missing_fields() -> None:
    # given a welcome email without a name
    # when it is validated
    with pytest.raises(InvalidTaskArguments) as caught:
        validate_arguments(SEND_WELCOME_EMAIL, WelcomeEmailArgs, {"user_email": "ada@example.com"})

    # then the missing field is named
    assert "user_name" in str(caught.value)
    assert SEND_WELCOME_EMAIL in str(caught.value)


@pytest.mark.parametrize(
    ("model", "values", "field"),
    [
        (ProcessPaymentArgs, {"payment_id": 1, "amount": 5}, "amount"),
        (NoArgs, {"force": True}, "force"),
    ],
)
def test_rejects_extra_fields(model: Any, values: dict[str, Any], field: str) -> None:
    # given an argument the task does not take
    # when it is validated
    # then it is refused, naming the stray field
    with pytest.raises(InvalidTaskArguments, match=field):
        validate_arguments("some.task", model, values)


@pytest.mark.parametrize(
    "user_name",
    [
        f"Ada\r\nBcc: {DISTINCTIVE}@evil.example",
        f"Ada\n{DISTINCTIVE}",
        f"Ada\r{DISTINCTIVE}",
        f"Ada\x00{DISTINCTIVE}",
        f"Ada\t{DISTINCTIVE}",
        f"Ada\x1b[31m{DISTINCTIVE}",
        f"Ada\x7f{DISTINCTIVE}",
        "",
        DISTINCTIVE * 20,
    ],
)
def test_rejects_unsafe_user_names(user_name: str) -> None:
    # given a name with line breaks, control characters, or a bad length
    values = {"user_email": "ada@example.com", "user_name": user_name}

    # when it is validated
    with pytest.raises(InvalidTaskArguments) as caught:
        validate_arguments(SEND_WELCOME_EMAIL, WelcomeEmailArgs, values)

    # then the error names task and field but never echoes the value
    message = str(caught.value)
    assert SEND_WELCOME_EMAIL in message
    assert "user_name" in message
    assert DISTINCTIVE not in message


@pytest.mark.parametrize(
    "user_email",
    [
        DISTINCTIVE,
        f"{DISTINCTIVE}@",
        f"@{DISTINCTIVE}.example.com",
        f"{DISTINCTIVE}@example.com\r\nBcc: x@evil.example",
        f"{DISTINCTIVE}@example.com, other@example.com",
        f"{DISTINCTIVE}@@example.com",
        f"{DISTINCTIVE} @example.com",
    ],
)
def test_rejects_bad_emails_without_echoing_them(user_email: str) -> None:
    # given an address that is not one valid email
    values = {"user_email": user_email, "user_name": "Ada"}

    # when it is validated
    with pytest.raises(InvalidTaskArguments) as caught:
        validate_arguments(SEND_WELCOME_EMAIL, WelcomeEmailArgs, values)

    # then the error names task and field but never the address
    message = str(caught.value)
    assert SEND_WELCOME_EMAIL in message
    assert "user_email" in message
    assert DISTINCTIVE not in message


def test_error_does_not_chain_the_pydantic_error() -> None:
    # given a bad value
    # when it is validated
    with pytest.raises(InvalidTaskArguments) as caught:
        validate_arguments(PROCESS_PAYMENT, ProcessPaymentArgs, {"payment_id": DISTINCTIVE})

    # then no chained exception (which would show the input in a traceback) is kept
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ is True
    assert DISTINCTIVE not in str(caught.value)


def test_models_are_frozen() -> None:
    # given validated arguments
    model = ProcessPaymentArgs(payment_id=1)

    # when one is changed
    # then it is refused
    with pytest.raises(ValueError, match="frozen"):
        model.payment_id = 2  # type: ignore[misc]


def test_a_secret_field_is_redacted_and_the_others_kept() -> None:
    from app import contracts

    kwargs = {"to": "ada@example.com", "reset_url": "https://x.example/r?t=1", "expires_minutes": 5}
    assert contracts.redacted(contracts.SEND_PASSWORD_RESET, kwargs) == {
        **kwargs,
        "reset_url": contracts.REDACTED,
    }
    assert contracts.has_secrets(contracts.SEND_PASSWORD_RESET)
    assert not contracts.has_secrets(contracts.SEND_WELCOME_EMAIL)
    assert contracts.redacted("other.app.task", kwargs) == kwargs
