"""``python -m tests.bench``: every performance figure and its baseline, measured in one run.

Each figure is a ratio of the fleet to a baseline measured by the same harness,
on the same queue, in the same run; the table shows both absolute values beside
the ratio and the target. Every measurement runs once per repetition, in the
same order, and the table reports medians.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from app.migrate import upgrade
from tests.bench.booking_flow import Flow
from tests.bench.cpu import loop_ms
from tests.bench.harness import Bench, Drain, measure_drain
from tests.bench.loop_lag import Lag
from tests.bench.plan import CORES, FLEET, SIZES, Measure, fleet_argv, measurements
from tests.bench.report import README, RESULTS, heading, machine, record, show_latest, table
from tests.bench.store import commit_us


def warm_up(bench: Bench, n: int) -> None:
    """One unrecorded drain of the booking profile with results stored.

    The first drain of a run was the slowest of it here, whichever came first
    (about 600 tasks/s against 900 later in the same run, three runs out of
    three). Why is not settled: a cold broker queue, result table and page
    cache are the candidates.
    """
    started = time.monotonic()
    drain = measure_drain(bench, fleet_argv("booking"), bench.rabbit(FLEET, "booking", "task_results"), n)
    bench.log(
        f"[warm-up] fleet booking, results stored: {drain.rate:,.0f} tasks/s, not recorded "
        f"({time.monotonic() - started:.0f}s)"
    )


def run(bench: Bench, todo: dict[str, Measure], reps: int) -> dict[str, list[dict[str, float]]]:
    """Run every measurement ``reps`` times, printing progress; return samples by name."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in todo}
    for rep in range(1, reps + 1):
        for name, measure in todo.items():
            speed, commit = loop_ms(), commit_us(bench)
            started = time.monotonic()
            value = measure(bench)
            if isinstance(value, Drain):
                sample = {
                    "value": value.rate,
                    "n": value.n,
                    "rows": value.rows,
                    "peak_mib": value.peak_rss_kib / 1024,
                }
                detail = (
                    f"{value.n} {value.unit} in {value.seconds:.2f}s, {value.rows} result rows, "
                    f"peak {sample['peak_mib']:.0f} MiB/process"
                )
                if value.cpu is not None:
                    per_item = value.cpu.per_item_us(value.n)
                    sample |= {f"cpu_us:{group}": us for group, us in per_item.items()}
                    sample["machine_busy"] = value.cpu.machine_busy
                    detail += "; CPU us per item: " + ", ".join(
                        f"{group} {us:,.0f}" for group, us in per_item.items()
                    )
                    detail += f"; cores {value.cpu.machine_busy:.0%} busy"
            elif isinstance(value, Flow):
                sample = {
                    "value": value.rate,
                    "n": value.n,
                    "db_ms": value.db_ms_per_booking,
                    "db_share": value.db_share,
                }
                detail = (
                    f"{value.n} bookings in {value.seconds:.2f}s, {value.db_ms_per_booking:.2f} ms in "
                    f"PostgreSQL per booking ({value.db_share:.0%} of worker time)"
                )
            elif isinstance(value, Lag):
                sample = {"value": value.p99_ms, "p50_ms": value.p50_ms, "max_ms": value.max_ms}
                detail = (
                    f"ms; {value.n} tasks published by {value.requests} coroutines in {value.seconds:.2f}s "
                    f"({value.rate:,.0f}/s); {value.ticks} ticks late by p50 {value.p50_ms:.2f} ms, "
                    f"max {value.max_ms:.2f} ms"
                )
            else:
                sample = {"value": float(value)}
                detail = ""
            sample |= {"loop_ms": speed, "commit_us": commit}
            samples[name].append(sample)
            bench.log(
                f"[{rep}/{reps}] {name:<38} {sample['value']:>10,.2f}  {detail} "
                f"({time.monotonic() - started:.0f}s; before it: CPU loop {speed:.0f} ms, "
                f"PostgreSQL commit {commit:,.0f} us)"
            )
    return samples


def log(line: str) -> None:
    """Progress goes to stderr, so stdout carries only the table."""
    print(line, file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--reps", type=int, default=1, help="repetitions; the table shows medians (default 1)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny task counts: checks the harness, not speed"
    )
    parser.add_argument("--only", default="", help="comma-separated substrings of measurement names to run")
    parser.add_argument(
        "--measurement",
        action="append",
        default=[],
        metavar="NAME",
        help="run this measurement (its exact name; repeat for more); with --only, either may pick it",
    )
    env = os.environ.get
    parser.add_argument(
        "--broker-url",
        default=env("BENCH_CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/magnetiq_bench"),
    )
    parser.add_argument(
        "--database-url",
        default=env("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/magnetiq_bench"),
    )
    parser.add_argument(
        "--redis-url",
        default=env("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
        help="a Redis database of the bench's own (the seed's setup runs there; the bench flushes it)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        help="append the run here (default tests/bench/RESULTS.md; --quick runs: nowhere)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw samples and table here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Set up the bench vhost's topology and database, run, print the table and append it to the results."""
    args = parse(argv)
    size = SIZES["quick" if args.quick else "full"]
    todo = measurements(size)
    unknown = sorted(set(args.measurement) - set(todo))
    if unknown:
        raise SystemExit(f"bench: no measurement named {', '.join(map(repr, unknown))}")
    if args.only or args.measurement:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        todo = {k: v for k, v in todo.items() if k in args.measurement or any(w in k for w in wanted)}
    upgrade(args.database_url)
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="magnetiq-bench-") as tmp:
        bench = Bench(args.broker_url, args.database_url, args.redis_url, Path(tmp), log=log)
        probes = machine(bench)
        log(f"bench: {len(todo)} measurements x {args.reps} repetition(s) on {CORES} cores")
        warm_up(bench, size["fleet"] // 5)
        samples = run(bench, todo, args.reps)
        bench.reset()
    lines, all_met = table(samples)
    print("\n".join(lines))
    results = args.results or (None if args.quick else RESULTS)
    if results:
        command = " ".join(["python -m tests.bench", *(argv if argv is not None else sys.argv[1:])])
        run_line = f"- run: `{command}`, {args.reps} repetition(s), medians"
        title = heading(started, datetime.now(UTC))
        record(results, title, [*probes, run_line, "", *lines])
        log(f"bench: run appended to {results}")
        if results == RESULTS:  # the project's own record: the bench runbook shows its latest figures
            show_latest(README, title, lines)
            log(f"bench: latest figures written to {README}")
    if args.json:
        args.json.write_text(json.dumps({"samples": samples, "table": lines}, indent=2))
    return 1 if args.strict and not all_met else 0


if __name__ == "__main__":
    sys.exit(main())
