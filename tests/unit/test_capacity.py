"""Capacity arithmetic: workers needed for a target rate, and the measured rate's edge cases."""

from __future__ import annotations

import pytest

from tests.support.paths import ROOT
from workers.cli.capacity import BENCH_ROWS, Throughput, bench_rate, workers_needed
from workers.cli.fleet import duration


@pytest.mark.parametrize(
    ("target", "per_worker", "headroom", "needed"),
    [
        (100, 25, 0.0, 4),  # exactly four
        (100, 25, 0.2, 5),  # 120 / 25 = 4.8
        (101, 25, 0.0, 5),
        (1, 50, 0.2, 1),  # never fewer than one
        (30, 10, 0.0, 3),  # float noise does not add a worker
    ],
)
def test_workers_needed(target: float, per_worker: float, headroom: float, needed: int) -> None:
    assert workers_needed(target, per_worker, headroom) == needed


@pytest.mark.parametrize(("target", "per_worker", "headroom"), [(0, 1, 0), (1, 0, 0), (1, 1, -0.1)])
def test_workers_needed_refuses_nonsense(target: float, per_worker: float, headroom: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        workers_needed(target, per_worker, headroom)


def test_throughput_counts_intervals_between_completions() -> None:
    assert Throughput("booking", 11, 5.0).per_second == 2.0
    assert Throughput("booking", 1, 0.0).per_second is None
    assert Throughput("booking", 3, 0.0).per_second is None


@pytest.mark.parametrize(
    ("seconds", "shown"), [(None, "-"), (0.25, "0.2s"), (59.9, "59.9s"), (95, "1m35s"), (7322, "2h02m")]
)
def test_duration(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown


BENCH_RUN = """
| drain measurement | tasks/s | peak RSS per worker process |
| --- | ---: | ---: |
| fleet booking, results, metrics on | 1,801 | 104 MiB |
| fleet email, results | 301 | 112 MiB |

| drain measurement | tasks/s | peak RSS per worker process |
| --- | ---: | ---: |
| fleet booking, results, metrics on | 736 | 107 MiB |
| fleet email, results | 290 | 110 MiB |
"""


def test_bench_rate_reads_the_last_runs_row_of_the_profile() -> None:
    # given a results file with two runs, when the booking and email rates are read
    # then they are the last run's
    assert bench_rate(BENCH_RUN, "booking") == (736.0, "fleet booking, results, metrics on")
    assert bench_rate(BENCH_RUN, "email") == (290.0, "fleet email, results")


def test_bench_rate_says_what_the_bench_does_not_measure() -> None:
    with pytest.raises(ValueError, match="maintenance: the bench measures no drain"):
        bench_rate(BENCH_RUN, "maintenance")
    with pytest.raises(ValueError, match="no drain table"):
        bench_rate("# empty\n", "booking")


def test_the_shipped_bench_results_give_every_measured_profile_a_rate() -> None:
    # given the bench results kept in the repository, every profile it measures has a rate
    text = (ROOT / "tests" / "bench" / "RESULTS.md").read_text()
    for queue in BENCH_ROWS:
        rate, _ = bench_rate(text, queue)
        assert rate > 0
