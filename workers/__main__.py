"""``python -m workers <profile|beat>``: exec the Celery command a profile describes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from app.settings import get_settings
from workers.profiles import PROFILES


def build_argv(role: str, extra: Sequence[str] = (), loglevel: str = "INFO") -> list[str]:
    """Return the full argv (``python -m celery ...``) for a profile or ``beat``."""
    base = [sys.executable, "-m", "celery"]
    if role == "beat":
        schedule = get_settings().beat_schedule_file
        return [*base, "-A", "workers.entry", "beat", "--loglevel", loglevel, "--schedule", schedule, *extra]
    return [*base, *PROFILES[role].argv(loglevel=loglevel), *extra]


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the role and exec Celery in this process, so signals reach it directly."""
    parser = argparse.ArgumentParser(
        prog="python -m workers",
        description="Run one fleet role: a worker profile or the beat scheduler. "
        "Arguments after the role are passed to Celery unchanged.",
    )
    parser.add_argument("role", choices=[*PROFILES, "beat"], help="worker profile, or beat")
    parser.add_argument("--loglevel", default=get_settings().log_level)
    parser.add_argument("--print", action="store_true", help="print the command instead of running it")
    args, extra = parser.parse_known_args(argv)
    command = build_argv(args.role, extra, args.loglevel)
    if args.print:
        print(" ".join(command))  # noqa: T201 - the requested output
        return
    if args.role == "beat":
        os.makedirs(os.path.dirname(get_settings().beat_schedule_file) or ".", exist_ok=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
