"""CSV imports of bookings uploaded by staff: validate every row, import chunks, then close.

``start_import`` validates the whole file and records a per-row error for
every bad line and the good lines in chunks; ``import_chunk`` books one chunk
in one transaction (a re-run finds it done); ``finish_import`` closes the
import with its totals once no chunk is pending; ``notify_imported`` queues
the confirmation email of each booking it made. Rows book confirmed slots
directly (staff arranged them); an amount becomes a pending payment.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypedDict

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, StringConstraints, ValidationError
from sqlalchemy import Connection, Engine, func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert

from app.booking.notices import Notifier, queue_once
from app.schema import (
    booking_import_chunks,
    booking_import_errors,
    booking_imports,
    bookings,
    payments,
    resources,
    time_slots,
    users,
)

#: The columns an import file must have, in any order.
COLUMNS = ("reference", "email", "name", "resource", "starts_at", "amount_cents", "currency")
Line = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]


class ImportReport(TypedDict):
    """An import's state after its last chunk: what ``finish_import`` returns."""

    import_id: int
    status: str
    imported: int
    rejected: int


class ImportNotFound(LookupError):
    """No import (or chunk) has the given id: the task can never succeed."""


class ImportRow(BaseModel):
    """One CSV row, as text converts to it."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    reference: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
    email: EmailStr
    name: Line
    resource: Line
    starts_at: AwareDatetime
    amount_cents: Annotated[int, Field(ge=0)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]

    @property
    def slot_key(self) -> tuple[str, datetime]:
        """The (resource name, UTC start) that names the row's slot."""
        return self.resource, self.starts_at.astimezone(UTC)


@dataclass(frozen=True)
class Checked:
    """A validated file: good rows with their slot ids, and errors, by line number."""

    rows: dict[int, tuple[ImportRow, int]]
    errors: dict[int, str]


def create_import(engine: Engine, filename: str, content: str) -> int:
    """Store an uploaded CSV file; return the import id to pass to ``import_bookings``."""
    with engine.begin() as db:
        return int(
            db.execute(
                insert(booking_imports)
                .values(filename=filename, content=content)
                .returning(booking_imports.c.id)
            ).scalar_one()
        )


def _parse(content: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(io.StringIO(content))
    missing = sorted(set(COLUMNS) - set(reader.fieldnames or ()))
    if missing:
        yield 1, f"missing columns: {', '.join(missing)}"
        return
    for record in reader:
        if None in record or None in record.values():
            yield reader.line_num, "wrong number of fields"
            continue
        yield reader.line_num, {name: record[name] for name in COLUMNS}


def _problems(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
        for e in error.errors(include_input=False, include_url=False)
    )


def check(db: Connection, content: str, only: set[int] | None = None) -> Checked:
    """Validate the rows of a file (every row, or the lines in ``only``).

    A row must have valid fields and name an existing slot, and no reference
    or slot may appear twice among the rows checked.
    """
    parsed: dict[int, ImportRow] = {}
    errors: dict[int, str] = {}
    for line, record in _parse(content):
        if only is not None and line not in only:
            continue
        if isinstance(record, str):
            errors[line] = record
            continue
        try:
            parsed[line] = ImportRow.model_validate(record)
        except ValidationError as exc:
            errors[line] = _problems(exc)
    slots = _slot_ids(db, {row.slot_key for row in parsed.values()})
    rows: dict[int, tuple[ImportRow, int]] = {}
    first_seen: dict[object, int] = {}
    for line, row in parsed.items():
        slot_id = slots.get(row.slot_key)
        duplicate = first_seen.get(row.reference) or first_seen.get(slot_id)
        if slot_id is None:
            errors[line] = f"no slot of {row.resource} starts at {row.starts_at.isoformat()}"
        elif duplicate is not None:
            errors[line] = f"reference or slot already on line {duplicate}"
        else:
            first_seen[row.reference] = first_seen[slot_id] = line
            rows[line] = (row, slot_id)
    return Checked(rows, errors)


def _slot_ids(db: Connection, keys: set[tuple[str, datetime]]) -> dict[tuple[str, datetime], int]:
    if not keys:
        return {}
    found = db.execute(
        select(resources.c.name, time_slots.c.starts_at, time_slots.c.id)
        .join(resources, resources.c.id == time_slots.c.resource_id)
        .where(tuple_(resources.c.name, time_slots.c.starts_at).in_(list(keys)))
    )
    return {(name, starts_at.astimezone(UTC)): slot_id for name, starts_at, slot_id in found}


def start_import(engine: Engine, import_id: int, chunk_size: int) -> list[int]:
    """Validate the file once, record its errors and chunks; return the chunks still to import.

    Raises:
        ImportNotFound: no such import.
    """
    with engine.begin() as db:
        status = db.execute(
            select(booking_imports.c.status).where(booking_imports.c.id == import_id).with_for_update()
        ).scalar()
        if status is None:
            raise ImportNotFound(f"import {import_id} does not exist")
        if status == "uploaded":
            _plan(db, import_id, chunk_size)
        return list(
            db.execute(
                select(booking_import_chunks.c.chunk)
                .where(
                    booking_import_chunks.c.import_id == import_id,
                    booking_import_chunks.c.status == "pending",
                )
                .order_by(booking_import_chunks.c.chunk)
            ).scalars()
        )


def _plan(db: Connection, import_id: int, chunk_size: int) -> None:
    content = db.execute(
        select(booking_imports.c.content).where(booking_imports.c.id == import_id)
    ).scalar_one()
    checked = check(db, content)
    lines = sorted(checked.rows)
    chunks = [lines[i : i + chunk_size] for i in range(0, len(lines), chunk_size)]
    if chunks:
        db.execute(
            insert(booking_import_chunks),
            [{"import_id": import_id, "chunk": n, "lines": chunk} for n, chunk in enumerate(chunks)],
        )
    _record_errors(db, import_id, checked.errors)
    db.execute(
        update(booking_imports)
        .where(booking_imports.c.id == import_id)
        .values(status="importing", total_rows=len(lines) + len(checked.errors), chunk_count=len(chunks))
    )


def _record_errors(db: Connection, import_id: int, errors: dict[int, str]) -> None:
    if errors:
        db.execute(
            insert(booking_import_errors).on_conflict_do_nothing(),
            [{"import_id": import_id, "line": line, "message": message} for line, message in errors.items()],
        )


def import_chunk(engine: Engine, import_id: int, chunk: int) -> int:
    """Book one chunk's rows once; return how many of them it booked (a re-run: as many as the first).

    Raises:
        ImportNotFound: no such import chunk.
    """
    with engine.begin() as db:
        row = db.execute(
            select(booking_import_chunks)
            .where(booking_import_chunks.c.import_id == import_id, booking_import_chunks.c.chunk == chunk)
            .with_for_update()
        ).first()
        if row is None:
            raise ImportNotFound(f"import {import_id} has no chunk {chunk}")
        if row.status != "pending":
            return int(row.imported)
        imported = _book_lines(db, import_id, set(row.lines))
        db.execute(
            update(booking_import_chunks)
            .where(booking_import_chunks.c.import_id == import_id, booking_import_chunks.c.chunk == chunk)
            .values(status="done", imported=imported)
        )
        return imported


def import_progress(engine: Engine, import_id: int) -> tuple[int, int]:
    """(chunks booked, chunks) of an import: its progress while its chord runs."""
    chunks = booking_import_chunks.c
    with engine.connect() as db:
        done, total = db.execute(
            select(func.count().filter(chunks.status == "done"), func.count()).where(
                chunks.import_id == import_id
            )
        ).one()
    return int(done), int(total)


def _pending_chunks(db: Connection, import_id: int) -> int:
    return int(
        db.execute(
            select(func.count())
            .select_from(booking_import_chunks)
            .where(
                booking_import_chunks.c.import_id == import_id, booking_import_chunks.c.status == "pending"
            )
        ).scalar_one()
    )


def _book_lines(db: Connection, import_id: int, lines: set[int]) -> int:
    content = db.execute(
        select(booking_imports.c.content).where(booking_imports.c.id == import_id)
    ).scalar_one()
    checked = check(db, content, only=lines)
    rows = {line: checked.rows[line] for line in sorted(checked.rows)}
    user_ids = _user_ids(db, {row.email: row.name for row, _ in rows.values()})
    # Like place_booking, hold each slot's lock while confirming it (in id order: no lock cycles).
    db.execute(
        select(time_slots.c.id)
        .where(time_slots.c.id.in_([slot_id for _, slot_id in rows.values()]))
        .order_by(time_slots.c.id)
        .with_for_update()
    ).all()
    conflicts: dict[int, str] = {}
    for line, (row, slot_id) in rows.items():
        values = {
            "reference": row.reference,
            "user_id": user_ids[row.email],
            "slot_id": slot_id,
            "status": "confirmed",
            "source": "import",
            "import_id": import_id,
            "confirmed_at": func.now(),
        }
        booking_id = db.execute(
            insert(bookings).values(**values).on_conflict_do_nothing().returning(bookings.c.id)
        ).scalar()
        if booking_id is None:
            conflicts[line] = "reference exists or slot already booked"
        elif row.amount_cents > 0:
            db.execute(
                insert(payments).values(
                    booking_id=booking_id,
                    amount_cents=row.amount_cents,
                    currency=row.currency,
                    idempotency_key=f"booking:{row.reference}",
                )
            )
    _record_errors(db, import_id, conflicts)
    return len(rows) - len(conflicts)


def _user_ids(db: Connection, people: dict[str, str]) -> dict[str, int]:
    """Create the users an import names (by email) that do not exist yet; return every id by email."""
    if not people:
        return {}
    # One sorted statement: chunks sharing users never wait on each other in a cycle.
    db.execute(
        insert(users).on_conflict_do_nothing(),
        [{"email": email, "name": people[email]} for email in sorted(people)],
    )
    return dict(db.execute(select(users.c.email, users.c.id).where(users.c.email.in_(people))).all())


def finish_import(engine: Engine, import_id: int) -> ImportReport:
    """Close an import whose chunks are all done, with its totals; a repeat changes nothing.

    Returns:
        The import's status and, once completed, its totals.

    Raises:
        ImportNotFound: no such import.
    """
    with engine.begin() as db:
        row = db.execute(
            select(booking_imports).where(booking_imports.c.id == import_id).with_for_update()
        ).first()
        if row is None:
            raise ImportNotFound(f"import {import_id} does not exist")
        if row.status == "importing" and _pending_chunks(db, import_id) == 0:
            imported = db.execute(
                select(func.coalesce(func.sum(booking_import_chunks.c.imported), 0)).where(
                    booking_import_chunks.c.import_id == import_id
                )
            ).scalar_one()
            rejected = db.execute(
                select(func.count())
                .select_from(booking_import_errors)
                .where(booking_import_errors.c.import_id == import_id)
            ).scalar_one()
            row = db.execute(
                update(booking_imports)
                .where(booking_imports.c.id == import_id)
                .values(
                    status="completed", imported_rows=imported, error_rows=rejected, finished_at=func.now()
                )
                .returning(booking_imports)
            ).one()
    return {
        "import_id": import_id,
        "status": row.status,
        "imported": row.imported_rows or 0,
        "rejected": row.error_rows or 0,
    }


def notify_imported(engine: Engine, notifier: Notifier, import_id: int) -> int:
    """Queue the confirmation email of each booking the import confirmed, once per booking.

    Returns:
        How many confirmations this call queued.
    """
    with engine.begin() as db:
        return queue_once(
            db,
            notifier,
            "confirmation",
            bookings.c.confirmation_queued_at,
            bookings.c.import_id == import_id,
            bookings.c.status == "confirmed",
        )


def import_errors(engine: Engine, import_id: int) -> dict[int, str]:
    """The per-row errors of an import, by CSV line number."""
    with engine.connect() as db:
        found = db.execute(
            text("SELECT line, message FROM booking_import_errors WHERE import_id = :id ORDER BY line"),
            {"id": import_id},
        )
        return dict(found.all())
