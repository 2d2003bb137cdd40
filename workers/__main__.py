"""``python -m workers <profile|beat>``: exec the Celery command a profile describes."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import MutableMapping, Sequence
from pathlib import Path

from app.settings import get_settings
from workers.processes import pid_alive
from workers.profiles import PROFILES

#: prometheus_client's multiprocess directory variable (read when it is imported).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir(role: str, environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """Give a prefork profile an empty multiprocess metrics directory of its own.

    The directory is ``<METRICS_DIR>/<profile>-<pid>``: the pid survives the exec,
    so it is this worker's, and workers on one machine never share one. Leftovers
    of workers that are gone are removed. Other roles run one process (or gevent)
    and get a plain registry, so the variable is cleared for them.

    Returns:
        The directory, or None when the role needs none or metrics are off.
    """
    environ.pop(MULTIPROC_ENV, None)
    settings = get_settings()
    profile = PROFILES.get(role)
    if profile is None or profile.pool != "prefork" or not settings.metrics_port:
        return None
    base = Path(settings.metrics_dir or Path(tempfile.gettempdir()) / "magnetiq-metrics")
    for old in base.glob(f"{role}-*"):
        pid = old.name.removeprefix(f"{role}-")
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = base / f"{role}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    environ[MULTIPROC_ENV] = str(path)
    return path


def build_argv(role: str, extra: Sequence[str] = (), loglevel: str = "INFO") -> list[str]:
    """Return the full argv (``python -m celery ...``) for a profile or ``beat``."""
    base = [sys.executable, "-m", "celery"]
    if role == "beat":
        # No --schedule: the fleet's scheduler keeps its state in PostgreSQL and never
        # opens Celery's schedule file (only celery.beat.PersistentScheduler does).
        return [*base, "-A", "workers.entry", "beat", "--loglevel", loglevel, *extra]
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
    prepare_metrics_dir(args.role)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
