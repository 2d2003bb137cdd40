"""The producer/worker contract: task names and the arguments each task accepts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    model_validator,
)

#: The state of a running task that reports how far it got: its info is ``{"done": n, "total": m}``.
PROGRESS = "PROGRESS"

SEND_WELCOME_EMAIL = "app.tasks.email_tasks.send_welcome_email"
SEND_BOOKING_CONFIRMATION = "app.tasks.email_tasks.send_booking_confirmation"
SEND_BOOKING_REMINDER = "app.tasks.email_tasks.send_booking_reminder"
SEND_BOOKING_CANCELLATION = "app.tasks.email_tasks.send_booking_cancellation"
SEND_BOOKING_EXPIRED = "app.tasks.email_tasks.send_booking_expired"
SEND_PASSWORD_RESET = "app.tasks.email_tasks.send_password_reset"
PROCESS_PAYMENT = "app.tasks.booking_tasks.process_payment"
PROCESS_BOOKING = "app.tasks.booking_tasks.process_booking"
CANCEL_BOOKING = "app.tasks.booking_tasks.cancel_booking"
SEND_BOOKING_REMINDERS = "app.tasks.booking_tasks.send_booking_reminders"
IMPORT_BOOKINGS = "app.tasks.booking_tasks.import_bookings"
IMPORT_BOOKING_CHUNK = "app.tasks.booking_tasks.import_booking_chunk"
FINISH_BOOKING_IMPORT = "app.tasks.booking_tasks.finish_booking_import"
NOTIFY_BOOKING_IMPORT = "app.tasks.booking_tasks.notify_booking_import"
EXPORT_BOOKING_CALENDARS = "app.tasks.booking_tasks.export_booking_calendars"
EXPORT_RESOURCE_CALENDAR = "app.tasks.booking_tasks.export_resource_calendar"
FINISH_CALENDAR_EXPORT = "app.tasks.booking_tasks.finish_calendar_export"
RECONCILE_PAYMENTS = "app.tasks.booking_tasks.reconcile_payments"
CLEANUP_OLD_SESSIONS = "app.tasks.maintenance.cleanup_old_sessions"
EXPIRE_RESULTS = "app.tasks.maintenance.expire_results"
REPORT_DEAD_LETTERS = "app.tasks.maintenance.report_dead_letters"
EXPIRE_PENDING_BOOKINGS = "app.tasks.maintenance.expire_pending_bookings"
SEND_TOMORROWS_REMINDERS = "app.tasks.maintenance.send_tomorrows_reminders"

#: Every task name producers may publish.
TASK_NAMES = (
    SEND_WELCOME_EMAIL,
    SEND_BOOKING_CONFIRMATION,
    SEND_BOOKING_REMINDER,
    SEND_BOOKING_CANCELLATION,
    SEND_BOOKING_EXPIRED,
    SEND_PASSWORD_RESET,
    PROCESS_PAYMENT,
    PROCESS_BOOKING,
    CANCEL_BOOKING,
    SEND_BOOKING_REMINDERS,
    IMPORT_BOOKINGS,
    IMPORT_BOOKING_CHUNK,
    FINISH_BOOKING_IMPORT,
    NOTIFY_BOOKING_IMPORT,
    EXPORT_BOOKING_CALENDARS,
    EXPORT_RESOURCE_CALENDAR,
    FINISH_CALENDAR_EXPORT,
    RECONCILE_PAYMENTS,
    CLEANUP_OLD_SESSIONS,
    EXPIRE_RESULTS,
    REPORT_DEAD_LETTERS,
    EXPIRE_PENDING_BOOKINGS,
    SEND_TOMORROWS_REMINDERS,
)

#: Marks a field secret: an extended result stores it as ``REDACTED`` (``redacted``).
SECRET = Field(json_schema_extra={"secret": True})
#: What a secret field's value is stored as.
REDACTED = "***"
#: A single-line string: no CR, LF or other control characters (header safety).
SingleLine = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
#: A longer single-line text (a cancellation reason).
SingleLineText = Annotated[
    str, StringConstraints(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")
]
#: An idempotency key: printable ASCII without spaces (``booking-confirmation:42``).
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[!-~]+$")]
#: A booking reference: it also names the calendar event's UID.
BookingRef = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.:-]*$")]


def _aware_iso(value: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not an ISO-8601 date and time") from None
    if moment.utcoffset() is None:
        raise ValueError("ISO-8601 date and time needs a UTC offset")
    return value


def _web_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"https", "http"} or not parts.hostname or any(c.isspace() for c in value):
        raise ValueError("not an http(s) URL")
    return value


#: An ISO-8601 date and time with a UTC offset, kept as the string the producer sent.
AwareIso = Annotated[str, StringConstraints(max_length=40), AfterValidator(_aware_iso)]
#: An absolute http(s) URL without whitespace or control characters.
WebUrl = Annotated[
    str, StringConstraints(max_length=2000, pattern=r"^[^\x00-\x1f\x7f]*$"), AfterValidator(_web_url)
]


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
    idempotency_key: IdempotencyKey | None = None


class BookingEmailArgs(Arguments):
    """What every booking email names first: the recipient and the booking."""

    to: EmailStr
    name: SingleLine
    booking_ref: BookingRef
    resource: SingleLine
    starts_at: AwareIso


class BookingConfirmationArgs(BookingEmailArgs):
    """Arguments of ``send_booking_confirmation``: a booking with its end."""

    ends_at: AwareIso
    idempotency_key: IdempotencyKey | None = None

    @model_validator(mode="after")
    def _ends_after_start(self) -> BookingConfirmationArgs:
        if datetime.fromisoformat(self.ends_at) <= datetime.fromisoformat(self.starts_at):
            raise ValueError("ends_at must be after starts_at")
        return self


class BookingReminderArgs(BookingConfirmationArgs):
    """Arguments of ``send_booking_reminder``."""


class BookingCancellationArgs(BookingEmailArgs):
    """Arguments of ``send_booking_cancellation``."""

    reason: SingleLineText | None = None
    idempotency_key: IdempotencyKey | None = None


class BookingExpiredArgs(BookingEmailArgs):
    """Arguments of ``send_booking_expired``."""

    idempotency_key: IdempotencyKey | None = None


class PasswordResetArgs(Arguments):
    """Arguments of ``send_password_reset``."""

    to: EmailStr
    name: SingleLine
    reset_url: Annotated[WebUrl, SECRET]
    expires_minutes: Annotated[int, Field(gt=0, le=7 * 24 * 60)]
    idempotency_key: IdempotencyKey | None = None


class ProcessPaymentArgs(Arguments):
    """Arguments of ``process_payment``."""

    payment_id: Annotated[int, Field(gt=0)]


#: A positive database id.
Id = Annotated[int, Field(gt=0)]


class ProcessBookingArgs(Arguments):
    """Arguments of ``process_booking``; ``reference`` is the booking's idempotency key."""

    reference: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
    user_id: Id
    slot_id: Id
    #: 0 books for free (no payment); otherwise the charge in minor units.
    amount_cents: Annotated[int, Field(ge=0, le=100_000_000)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "EUR"


class CancelBookingArgs(Arguments):
    """Arguments of ``cancel_booking``."""

    booking_id: Id
    reason: SingleLine | None = None


class BookingRemindersArgs(Arguments):
    """Arguments of ``send_booking_reminders``: the UTC day (``YYYY-MM-DD``) whose bookings to remind."""

    day: Annotated[date, Strict(False)]


class ImportArgs(Arguments):
    """Arguments of ``import_bookings`` and ``finish_booking_import``."""

    import_id: Id


class ImportChunkArgs(Arguments):
    """Arguments of ``import_booking_chunk``."""

    import_id: Id
    chunk: Annotated[int, Field(ge=0)]


class ImportReport(Arguments):
    """An import's state and totals: what ``finish_booking_import`` returns."""

    import_id: Id
    status: Literal["uploaded", "importing", "completed"]
    imported: Annotated[int, Field(ge=0)]
    rejected: Annotated[int, Field(ge=0)]


class NotifyImportArgs(Arguments):
    """Arguments of ``notify_booking_import``: the report of the chain step before it.

    A task meant to follow another in a chain takes its parent's result as its
    first argument, typed as what the parent returns; any other value is
    refused like any bad argument.
    """

    report: ImportReport


class CalendarArgs(Arguments):
    """Arguments of ``export_resource_calendar``."""

    resource_id: Id


class FinishCalendarExportArgs(Arguments):
    """Arguments of ``finish_calendar_export``: its chord header's results, in header order.

    Each is the id of the resource whose feed was written, or None for one
    deleted since the export began.
    """

    exported: Annotated[list[Id | None], Field(max_length=100_000)]


class ReconcileArgs(Arguments):
    """Arguments of ``reconcile_payments``: a statement file on the workers' shared volume."""

    statement_path: Annotated[
        str, StringConstraints(min_length=1, max_length=1000, pattern=r"^[^\x00-\x1f\x7f]*$")
    ]


class NoArgs(Arguments):
    """Arguments of a task that takes none."""


class PeriodicArgs(Arguments):
    """Arguments of a periodic maintenance task: the (job, slot) beat sent, or neither.

    With both, the run is recorded once per (job, slot) in ``periodic_runs`` and
    a duplicate message of the slot does nothing; with neither (a call by hand,
    as in the seed) the task simply runs.
    """

    job: SingleLine | None = None
    #: The slot as an ISO-8601 string with its offset (JSON has no datetime).
    slot: Annotated[AwareDatetime | None, Field(strict=False)] = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> Self:
        if (self.job is None) != (self.slot is None):
            raise ValueError("job and slot come together")
        return self

    @property
    def recorded(self) -> tuple[str, datetime] | None:
        """The (job, slot) this run is recorded under, or None for an unrecorded run."""
        return None if self.job is None or self.slot is None else (self.job, self.slot)


#: Every task's argument model: each publish path validates with it, as the task itself does.
ARGUMENT_MODELS: dict[str, type[Arguments]] = {
    SEND_WELCOME_EMAIL: WelcomeEmailArgs,
    SEND_BOOKING_CONFIRMATION: BookingConfirmationArgs,
    SEND_BOOKING_REMINDER: BookingReminderArgs,
    SEND_BOOKING_CANCELLATION: BookingCancellationArgs,
    SEND_BOOKING_EXPIRED: BookingExpiredArgs,
    SEND_PASSWORD_RESET: PasswordResetArgs,
    PROCESS_PAYMENT: ProcessPaymentArgs,
    PROCESS_BOOKING: ProcessBookingArgs,
    CANCEL_BOOKING: CancelBookingArgs,
    SEND_BOOKING_REMINDERS: BookingRemindersArgs,
    IMPORT_BOOKINGS: ImportArgs,
    IMPORT_BOOKING_CHUNK: ImportChunkArgs,
    FINISH_BOOKING_IMPORT: ImportArgs,
    NOTIFY_BOOKING_IMPORT: NotifyImportArgs,
    EXPORT_BOOKING_CALENDARS: NoArgs,
    EXPORT_RESOURCE_CALENDAR: CalendarArgs,
    FINISH_CALENDAR_EXPORT: FinishCalendarExportArgs,
    RECONCILE_PAYMENTS: ReconcileArgs,
    CLEANUP_OLD_SESSIONS: PeriodicArgs,
    EXPIRE_RESULTS: PeriodicArgs,
    REPORT_DEAD_LETTERS: PeriodicArgs,
    EXPIRE_PENDING_BOOKINGS: PeriodicArgs,
    SEND_TOMORROWS_REMINDERS: PeriodicArgs,
}


def redacted(task_name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` with every field the task's contract marks secret replaced by ``REDACTED``."""
    secret = secret_fields(task_name)
    return {key: REDACTED if key in secret else value for key, value in kwargs.items()}


def has_secrets(task_name: str) -> bool:
    """Whether the task's contract marks any field secret."""
    return secret_fields(task_name) != set()


def secret_fields(task_name: str) -> set[str]:
    """The names of the fields the task's contract marks secret."""
    model = ARGUMENT_MODELS.get(task_name)
    if model is None:
        return set()
    return {
        name
        for name, field in model.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("secret")
    }


def model_for(task_name: str) -> type[Arguments]:
    """The argument model of one of the fleet's tasks.

    Raises:
        InvalidTaskArguments: ``task_name`` is not a fleet task (a typo, or another app's).
    """
    try:
        return ARGUMENT_MODELS[task_name]
    except KeyError:
        raise InvalidTaskArguments(f"{task_name}: not a fleet task (see app/contracts.py)") from None


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
