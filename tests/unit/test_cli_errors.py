"""The command line's one "service is down" error: one line, the address masked, how to start it."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import psycopg2
import pytest
from click.testing import CliRunner
from sqlalchemy.exc import OperationalError

from app.settings import get_settings
from workers.cli import fleet, main
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


def test_capacity_asks_for_per_worker_when_results_are_in_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    # given results stored in Redis, where there are no result rows to measure throughput from
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/0")
    monkeypatch.setattr(fleet, "broker_connection", lambda _settings: nullcontext())
    monkeypatch.setattr(fleet, "passive_counts", lambda _connection, _queue: (0, 1))
    monkeypatch.setattr(fleet, "is_redis", lambda _connection: False)
    get_settings.cache_clear()
    try:
        # when capacity is asked to measure
        result = CliRunner().invoke(main, ["capacity", "booking", "--target", "9"])
    finally:
        get_settings.cache_clear()

    # then it says why it cannot, and what to pass instead
    assert result.exit_code == 1
    assert "result rows in PostgreSQL" in result.output and "--per-worker" in result.output


def test_capacity_from_the_bench_prints_the_rate_its_source_and_what_it_assumes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # given a bench results file whose last run drained 600 booking tasks/s with one worker
    results = tmp_path / "RESULTS.md"
    results.write_text(
        "| drain measurement | tasks/s |\n| --- | ---: |\n| fleet booking, results, metrics on | 600 |\n"
    )
    monkeypatch.setattr(fleet, "broker_connection", lambda _settings: nullcontext())
    monkeypatch.setattr(fleet, "passive_counts", lambda _connection, _queue: (0, 2))
    monkeypatch.setattr(fleet, "is_redis", lambda _connection: False)

    # when capacity is asked for 1,000 tasks/s from it
    result = CliRunner().invoke(main, ["capacity", "booking", "--target", "1000", "--bench", str(results)])

    # then it names the row and file, says what the rate assumes, and sizes with the headroom
    assert result.exit_code == 0, result.output
    assert "600.0 tasks/s per worker, the bench's 'fleet booking, results, metrics on'" in result.output
    assert "assumes one booking worker" in result.output
    assert "booking: 2 worker(s) of profile booking for 1000 tasks/s" in result.output


def test_capacity_takes_one_source_of_the_rate(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("")
    result = CliRunner().invoke(
        main, ["capacity", "booking", "--target", "9", "--per-worker", "3", "--bench", str(results)]
    )
    assert result.exit_code == 2
    assert "pass --per-worker or --bench, not both" in result.output
