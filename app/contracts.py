"""The producer/worker contract: task names and the arguments each task accepts."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, ValidationError

SEND_WELCOME_EMAIL = "app.tasks.email_tasks.send_welcome_email"
PROCESS_PAYMENT = "app.tasks.booking_tasks.process_payment"
CLEANUP_OLD_SESSIONS = "app.tasks.maintenance.cleanup_old_sessions"

#: Every task name producers may publish.
TASK_NAMES = (SEND_WELCOME_EMAIL, PROCESS_PAYMENT, CLEANUP_OLD_SESSIONS)

#: A single-line string: no CR, LF or other control characters (header safety).
SingleLine = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]


#: Largest JSON encoding of one task's arguments, in bytes. Tasks carry ids and
#: short strings, never documents: a bigger payload is a bug or an attack.
MAX_PAYLOAD_BYTES = 128 * 1024
#: Largest message body a worker decodes: the payload cap with room for JSON
#: escaping (up to 6 bytes per character) and the protocol envelope.
MAX_MESSAGE_BYTES = 6 * MAX_PAYLOAD_BYTES + 4096


class InvalidTaskArguments(ValueError):
    """A task's arguments can never be valid: fail at once, never retry."""


class PayloadTooLarge(InvalidTaskArguments):
    """A task's arguments encode to more than ``MAX_PAYLOAD_BYTES``."""


class Arguments(BaseModel):
    """Base of every task's argument model: strict JSON types, no extras."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class WelcomeEmailArgs(Arguments):
    """Arguments of ``send_welcome_email``."""

    user_email: EmailStr
    user_name: SingleLine


class ProcessPaymentArgs(Arguments):
    """Arguments of ``process_payment``."""

    payment_id: Annotated[int, Field(gt=0)]


class NoArgs(Arguments):
    """Arguments of a task that takes none."""


def validate_arguments(task_name: str, model: type[Arguments], values: dict[str, Any]) -> Arguments:
    """Validate task arguments, raising one clear error that carries no user data.

    Raises:
        InvalidTaskArguments: naming the task and every bad field, without the
            rejected values (they may be personal data).
        PayloadTooLarge: the arguments encode to more than ``MAX_PAYLOAD_BYTES``.
    """
    try:
        arguments = model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'arguments'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise InvalidTaskArguments(f"{task_name}: invalid arguments: {problems}") from None
    size = len(arguments.model_dump_json())
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(
            f"{task_name}: arguments of {size} bytes exceed the {MAX_PAYLOAD_BYTES}-byte cap"
        )
    return arguments
