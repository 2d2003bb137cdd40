"""The bench's output: the table of ratios, the machine probes, and the run appended to RESULTS.md."""

from __future__ import annotations

import itertools
import os
import platform
import statistics
import subprocess
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import redis
from sqlalchemy import text

from tests.bench.cpu import GROUPS
from tests.bench.harness import ROOT, Bench
from tests.bench.plan import BOOKING_FLOW, FIGURES, Figure

#: Where ``make bench`` appends each run; earlier runs are never rewritten.
RESULTS = ROOT / "tests" / "bench" / "RESULTS.md"
RESULTS_INTRO = """# Benchmark results

Every `make bench` run, appended as it finished: the date, the commit, the
machine and its services, then the table `python -m tests.bench` printed.
Earlier runs are never edited; README.md in this directory says how each
figure is taken and what each baseline is.
"""


def median(samples: list[dict[str, float]], key: str = "value") -> float | None:
    """Median of one field over the repetitions, or None when absent."""
    values = [s[key] for s in samples if key in s]
    return statistics.median(values) if values else None


#: Slowest over fastest CPU loop beyond which the run is flagged: the host changed speed
#: (single loops here scatter by up to a third; a host slowdown seen here was 1.8x).
SPEED_SPREAD = 1.5


def speed_lines(samples: dict[str, list[dict[str, float]]]) -> list[str]:
    """How long the fixed CPU loop took before the measurements, and a warning when it moved."""
    speeds = [sample["loop_ms"] for runs in samples.values() for sample in runs if "loop_ms" in sample]
    commits = [sample["commit_us"] for runs in samples.values() for sample in runs if "commit_us" in sample]
    if not speeds:
        return []
    fastest, slowest = min(speeds), max(speeds)
    lines = [
        "",
        f"Machine speed: a fixed CPU loop took {fastest:.0f}-{slowest:.0f} ms before the measurements "
        f"(median {statistics.median(speeds):.0f} ms).",
    ]
    if commits:
        lines.append(
            f"Disk: one durable PostgreSQL commit took {min(commits):,.0f}-{max(commits):,.0f} us "
            f"before the measurements (median {statistics.median(commits):,.0f} us)."
        )
    if slowest > fastest * SPEED_SPREAD:
        lines.append(
            f"WARNING: the machine's speed changed by {slowest / fastest - 1:.0%} during the run, "
            "so measurements taken at different speeds do not compare; run again when it is steady."
        )
    return lines


def verdict(fig: Figure, fleet: float, ratio: float) -> tuple[str, bool | None]:
    """A figure's target as the table shows it, and whether it was met (None: no target)."""
    sign = "<=" if fig.at_most else ">="
    checks = [
        (f"{sign} {bound:g}{suffix}", value <= bound if fig.at_most else value >= bound)
        for bound, value, suffix in ((fig.target, ratio, "x"), (fig.limit, fleet, f" {fig.unit}"))
        if bound is not None
    ]
    if not checks:
        return "-", None
    return ", ".join(text for text, _ in checks), all(met for _, met in checks)


def table(samples: dict[str, list[dict[str, float]]]) -> tuple[list[str], bool]:
    """Render the markdown table; return its lines and whether every target was met."""
    lines = [
        "| figure | fleet | baseline | baseline value | ratio | target | met |",
        "| --- | ---: | --- | ---: | ---: | ---: | :-: |",
    ]
    all_met = True
    for fig in FIGURES:
        if fig.fleet not in samples or fig.baseline not in samples:
            continue
        fleet, base = median(samples[fig.fleet], fig.field), median(samples[fig.baseline], fig.field)
        assert fleet is not None and base is not None, fig  # every drain records every field
        ratio = fleet / base if base else float("inf")
        target, met = verdict(fig, fleet, ratio)
        all_met &= met is not False
        lines.append(
            f"| {fig.name} | {fleet:,.1f} {fig.unit} | {fig.baseline} | {base:,.1f} {fig.unit} | "
            f"{ratio:.2f}x | {target} | {'-' if met is None else 'yes' if met else 'NO'} |"
        )
    lines += speed_lines(samples)
    lines += [
        "",
        "| drain measurement | tasks/s | peak RSS per worker process | "
        + " | ".join(f"CPU us/item: {group}" for group in GROUPS)
        + " | cores busy | PostgreSQL commit before it |",
        "| --- | ---: | ---: |" + " ---: |" * (len(GROUPS) + 2),
    ]
    for name, runs in samples.items():
        peak = median(runs, "peak_mib")
        if peak is None:
            continue
        cpu = [median(runs, f"cpu_us:{group}") for group in GROUPS]
        busy, commit = median(runs, "machine_busy"), median(runs, "commit_us")
        lines.append(
            f"| {name} | {median(runs):,.0f} | {peak:,.0f} MiB | "
            + " | ".join("-" if us is None else f"{us:,.0f}" for us in cpu)
            + f" | {'-' if busy is None else f'{busy:.0%}'}"
            + f" | {'-' if commit is None else f'{commit:,.0f} us'} |"
        )
    if BOOKING_FLOW in samples:
        runs = samples[BOOKING_FLOW]
        lines += [
            "",
            "| booking flow: booking -> payment -> confirmation email | bookings/s "
            "| PostgreSQL ms per booking | share of worker time in PostgreSQL |",
            "| --- | ---: | ---: | ---: |",
            f"| booking flow, booking profile | {median(runs):,.1f} | {median(runs, 'db_ms'):,.2f} "
            f"| {median(runs, 'db_share'):.0%} |",
        ]
    return lines, all_met


def _first_line(path: str, prefix: str) -> str:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(prefix)), "unknown")


def commit() -> str:
    """The checked-out commit, and whether the work tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} (with uncommitted changes)" if dirty else head


def machine(bench: Bench) -> list[str]:
    """What the run ran on: cores, memory, software and service versions."""
    with bench.connection() as connection:
        rabbit = connection.connection.server_properties.get("version", "unknown")
    with bench.engine().connect() as db:
        postgres = db.execute(text("SHOW server_version")).scalar_one()
    with redis.Redis.from_url(bench.redis_url) as client:
        redis_version = client.info("server").get("redis_version", "unknown")
    cores = os.cpu_count() or 1
    return [
        f"- machine: {cores} cores ({_first_line('/proc/cpuinfo', 'model name')}), "
        f"{_first_line('/proc/meminfo', 'MemTotal')} memory, {platform.system()} {platform.release()}",
        f"- software: Python {platform.python_version()}, Celery {version('celery')}, "
        f"kombu {version('kombu')}",
        f"- services: RabbitMQ {rabbit}, PostgreSQL {postgres}, Redis {redis_version}, all on loopback",
    ]


def record(path: Path, heading: str, lines: list[str]) -> None:
    """Append one run to ``path`` (created with its introduction if missing); never rewrite earlier runs."""
    new = not path.exists()
    with path.open("a", encoding="utf-8") as out:
        if new:
            out.write(RESULTS_INTRO)
        out.write("\n".join(["", f"## {heading}", "", *lines]) + "\n")


#: The bench's runbook shows the latest run's figures between these markers, rewritten by each recorded run.
README = Path(__file__).with_name("README.md")
LATEST_START, LATEST_END = "<!-- bench:start -->", "<!-- bench:end -->"


def show_latest(readme: Path, heading: str, lines: list[str]) -> None:
    """Replace the figures table between the README's markers with this run's; the rest stays as it is."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(LATEST_START) + len(LATEST_START), text.index(LATEST_END)
    first = next(i for i, line in enumerate(lines) if line.startswith("| figure"))
    figures = list(itertools.takewhile(lambda line: line.startswith("|"), lines[first:]))
    note = f"Run of {heading}, as `make bench` wrote it (regenerated by each run, never edited by hand):"
    block = "\n".join(["", note, "", *figures, ""])
    readme.write_text(text[:start] + block + "\n" + text[end:], encoding="utf-8")


def heading(started: datetime, finished: datetime) -> str:
    """A run's heading in RESULTS.md: when it ran and on which commit."""
    minutes = (finished - started).total_seconds() / 60
    return f"{started.astimezone(UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}, {minutes:.0f} min"
