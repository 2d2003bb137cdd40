"""The bench's plan: every baseline is measured, and each starts as its users start it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bench.plan import FIGURES, PLAIN, SEED, SIZES, measurements, plain_argv, seed_argv


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
    targets = {figure.baseline: figure.target for figure in FIGURES}
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
