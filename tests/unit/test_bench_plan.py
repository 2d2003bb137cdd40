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
    targets = {f.baseline: f.target for f in FIGURES if f.fleet == "fleet booking, results, metrics on"}
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
    samples = {name: [{"value": 2.0, "db_ms": 1.0, "db_share": 0.2}] for name in measurements(SIZES["quick"])}

    # when the table is rendered, then every figure has its row, naming its baseline
    lines, _ = table(samples)
    for figure in FIGURES:
        assert any(line.startswith(f"| {figure.name} |") and figure.baseline in line for line in lines), (
            figure
        )
