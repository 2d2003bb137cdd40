"""The bench's plan: every baseline is measured, and each starts as its users start it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bench.plan import FIGURES, PLAIN, SEED, SIZES, Figure, measurements, plain_argv, seed_argv
from tests.bench.report import table, verdict


class Touched(Exception):
    """The measurement reached for the machine: it measures something."""


class Untouchable:
    """A bench that raises as soon as a measurement uses it."""

    def __getattr__(self, name: str) -> Any:
        raise Touched(name)


@pytest.mark.parametrize("figure", FIGURES, ids=lambda f: f"{f.name} vs {f.baseline}")
def test_no_baseline_is_a_constant(figure: Any) -> None:
    # given the measurement behind a figure's baseline
    measure = measurements(SIZES["quick"])[figure.baseline]
    # when it runs, then it uses the bench: it measures, it does not return a number it already had
    with pytest.raises(Touched):
        measure(Untouchable())  # type: ignore[arg-type]


def test_plain_celery_starts_with_the_seeds_command_line() -> None:
    argv = plain_argv("prefork", 2, 1, "booking")
    assert argv[:4] == ["-A", PLAIN, "worker", "--loglevel=info"]
    assert "-q" not in argv and "--without-gossip" not in argv
    assert argv[4:] == ["-Q", "booking", "-P", "prefork", "-c", "2", "--prefetch-multiplier", "1"]


def test_the_seeds_setup_starts_with_the_seeds_command_line_and_defaults() -> None:
    assert seed_argv() == ["-A", SEED, "worker", "--loglevel=info"]


def test_the_targeted_baselines_are_the_normal_starts_and_the_quiet_one_has_no_target() -> None:
    # (the fleet's headline drain on RabbitMQ; its rows on Redis are information beside the seed's)
    targets = {
        f.baseline: f.target
        for f in FIGURES
        if f.fleet == "fleet booking, results, metrics on" and f.field == "value"
    }
    assert targets["plain booking, stock db backend"] == 3.0
    assert targets["seed setup, Redis broker and results"] == 1.5
    assert targets["plain booking, stock db, quiet start"] is None
    # the quiet start is the reference measurements' command line, kept as an extra row
    assert plain_argv("prefork", 2, 1, "booking", quiet=True)[:5] == [
        "-q",
        "-A",
        PLAIN,
        "worker",
        "--loglevel=WARNING",
    ]


def test_the_loop_lag_is_held_to_five_ms_whatever_the_baseline_does() -> None:
    # given the headline loop-lag figure: the seed's way of publishing blocks the loop by design
    figure = next(f for f in FIGURES if f.baseline == "plain loop lag p99, .delay() + confirms")
    assert (figure.target, figure.limit, figure.unit, figure.at_most) == (None, 5.0, "ms", True)
    # when the fleet's p99 is under or over 5 ms, then the row is met or not, whatever the ratio
    assert verdict(figure, 4.2, 0.02) == ("<= 5 ms", True)
    assert verdict(figure, 6.0, 0.02) == ("<= 5 ms", False)


def test_a_ratio_target_and_an_absolute_limit_must_both_hold() -> None:
    figure = Figure("lag", "fleet", "base", 0.5, unit="ms", at_most=True, limit=5.0)
    assert verdict(figure, 4.0, 0.4) == ("<= 0.5x, <= 5 ms", True)
    assert verdict(figure, 4.0, 0.6)[1] is False
    assert verdict(Figure("rate", "fleet", "base", None), 1.0, 1.0) == ("-", None)


def test_a_full_run_prints_a_row_for_every_figure_against_its_baseline() -> None:
    # given a sample for every measurement the plan takes (the smoke run takes one per code path)
    sample = {"value": 2.0, "db_ms": 1.0, "db_share": 0.2, "peak_mib": 90.0, "cpu_us:worker main": 300.0}
    samples = {name: [sample] for name in measurements(SIZES["quick"])}

    # when the table is rendered, then every figure has its row, naming its baseline
    lines, _ = table(samples)
    for figure in FIGURES:
        assert any(line.startswith(f"| {figure.name} |") and figure.baseline in line for line in lines), (
            figure
        )


def test_the_memory_and_cpu_rows_compare_their_own_field_against_an_absolute_bound() -> None:
    # given a fleet drain holding 97 MiB per process and spending 300 us per task in its main process
    fleet = {"value": 800.0, "peak_mib": 97.0, "cpu_us:worker main": 300.0}
    seed = {"value": 900.0, "peak_mib": 63.0, "cpu_us:worker main": 900.0}
    samples = {"fleet booking, results, metrics on": [fleet], "seed setup, Redis broker and results": [seed]}

    # when the table is rendered
    lines, _ = table(samples)

    # then the memory row is met (under 100 MiB) and the CPU row is not (over 250 us), whatever the rates
    rss = next(line for line in lines if line.startswith("| peak RSS per worker process"))
    cpu = next(line for line in lines if line.startswith("| worker main-process CPU per booking task"))
    assert "| 97.0 MiB |" in rss and "<= 100 MiB | yes |" in rss
    assert "| 300.0 us |" in cpu and "| 900.0 us |" in cpu and "<= 250 us | NO |" in cpu


def test_the_email_drain_is_held_to_nine_tenths_of_its_concurrency_bound() -> None:
    # given the email row against raw aiosmtplib: 100 greenlets at a 0.2 s SMTP delay allow 500/s
    figure = next(f for f in FIGURES if f.baseline == "raw aiosmtplib, same connections")
    # when the fleet sends 300/s, as fast as raw aiosmtplib, then the floor of 450/s is still missed
    assert verdict(figure, 300.0, 1.0) == (">= 0.6x, >= 450 emails/s", False)
    assert verdict(figure, 460.0, 1.0)[1] is True
