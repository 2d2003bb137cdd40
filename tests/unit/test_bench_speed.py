"""The bench's machine-speed probe and the warning it raises when the host changes speed mid-run."""

from __future__ import annotations

from tests.bench.cpu import loop_ms
from tests.bench.report import speed_lines


def samples(*speeds: float) -> dict[str, list[dict[str, float]]]:
    runs = [{"value": 1.0, "loop_ms": s, "commit_us": 100.0 + 50 * i} for i, s in enumerate(speeds)]
    return {"fleet": runs, "plain": [{"value": 2.0}]}


def test_loop_ms_times_real_work_in_milliseconds() -> None:
    # a million interpreted additions take well over a millisecond and well under five seconds
    assert 1 < loop_ms(tries=1) < 5000


def test_a_steady_machine_gets_the_ranges_and_no_warning() -> None:
    lines = speed_lines(samples(36, 50, 38))
    assert lines[1] == "Machine speed: a fixed CPU loop took 36-50 ms before the measurements (median 38 ms)."
    assert (
        lines[2]
        == "Disk: one durable PostgreSQL commit took 100-200 us before the measurements (median 150 us)."
    )
    assert not any(line.startswith("WARNING") for line in lines)


def test_a_machine_that_changed_speed_is_flagged_with_how_much() -> None:
    lines = speed_lines(samples(36, 70))
    assert lines[-1].startswith("WARNING: the machine's speed changed by 94% during the run")


def test_no_probe_no_lines() -> None:
    assert speed_lines({"plain": [{"value": 2.0}]}) == []
