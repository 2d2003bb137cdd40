"""The command line's one "service is down" error: one line, the address masked, how to start it."""

from __future__ import annotations

import psycopg2
import pytest
from sqlalchemy.exc import OperationalError

from workers.cli.connections import START_HINTS, ServiceDown, database_errors


@pytest.mark.parametrize("service", sorted(START_HINTS))
def test_every_service_has_one_line_with_its_setting_and_start_hint(service: str) -> None:
    # given a service that refused the connection
    name, setting, hint = START_HINTS[service]  # type: ignore[index]

    # when the error is built
    error = ServiceDown(
        service, "scheme://user:s3cret@127.0.0.1:1/x", ConnectionRefusedError("refused\n  here")
    )  # type: ignore[arg-type]

    # then it is one line naming the service, the masked address, the hint and the setting
    message = error.format_message()
    assert "\n" not in message
    assert message.startswith(f"{name} is not reachable at scheme://user:***@127.0.0.1:1/x (refused here)")
    assert hint in message and setting in message
    assert "s3cret" not in message
    assert error.exit_code == 2


def test_a_database_error_in_the_block_becomes_service_down_with_the_driver_reason() -> None:
    # given a block whose database call fails the way SQLAlchemy reports it
    cause = OperationalError("SELECT 1", {}, psycopg2.OperationalError("connection refused"))

    # when it runs inside database_errors
    with pytest.raises(ServiceDown) as raised, database_errors("postgresql://app:pw@db:5432/magnetiq"):
        raise cause

    # then the error names PostgreSQL, the masked URL and the driver's own reason
    message = raised.value.format_message()
    assert message.startswith(
        "PostgreSQL is not reachable at postgresql://app:***@db:5432/magnetiq (connection refused)"
    )
    assert raised.value.__cause__ is cause
