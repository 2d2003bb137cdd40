"""Each bench run is appended to the results file; earlier runs are never rewritten."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from tests.bench.report import LATEST_END, LATEST_START, RESULTS_INTRO, heading, record, show_latest


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


def test_the_readme_shows_only_the_latest_runs_figures(tmp_path: Path) -> None:
    # given a README with the markers and a run's printed lines (figures table, then more)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Manual\n\nbefore\n{LATEST_START}\nold table\n{LATEST_END}\nafter\n")
    run = ["| figure | fleet |", "| --- | ---: |", "| drain | 900 |", ""]
    run += ["Machine speed: ...", "| drain x | 1 |"]

    # when two runs are shown one after the other
    show_latest(readme, "first run", run)
    show_latest(readme, "second run", [*run[:2], "| drain | 950 |", *run[3:]])

    # then only the second run's figures table sits between the markers, and the rest is untouched
    text = readme.read_text()
    assert text.startswith(f"# Manual\n\nbefore\n{LATEST_START}\n")
    assert text.endswith(f"{LATEST_END}\nafter\n")
    block = text[text.index(LATEST_START) : text.index(LATEST_END)]
    assert "second run" in block and "first run" not in block and "old table" not in block
    assert "| drain | 950 |" in block and "| drain | 900 |" not in block
    assert "Machine speed" not in block and "drain x" not in block
