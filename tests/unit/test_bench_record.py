"""Each bench run is appended to the results file; earlier runs are never rewritten."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from tests.bench.report import RESULTS_INTRO, heading, record


def test_the_first_run_creates_the_file_with_its_introduction(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    record(results, "2026-12-05 10:00 UTC, commit abc", ["- machine: 2 cores", "", "| a | b |"])
    assert results.read_text() == (
        RESULTS_INTRO + "\n## 2026-12-05 10:00 UTC, commit abc\n\n- machine: 2 cores\n\n| a | b |\n"
    )


def test_a_later_run_is_appended_below_the_earlier_ones_untouched(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    record(results, "first", ["| 1 |"])
    earlier = results.read_text()
    record(results, "second", ["| 2 |"])
    text = results.read_text()
    assert text.startswith(earlier)
    assert text[len(earlier) :] == "\n## second\n\n| 2 |\n"


def test_the_heading_says_when_which_commit_and_how_long() -> None:
    started = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    finished = datetime(2026, 12, 5, 10, 42, tzinfo=UTC)
    assert re.fullmatch(
        r"2026-12-05 10:00 UTC, commit \S+( \(with uncommitted changes\))?, 42 min",
        heading(started, finished),
    )
