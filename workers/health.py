"""Health probes: liveness from a heartbeat the worker's own loop keeps, readiness from its consumer.

Liveness never touches the broker (a broker blip must not restart every
worker, celery#4079): a worker-level bootstep touches ``<profile>.alive``
from the worker's timer, so the file goes stale only when the worker's loop
stops. Readiness is ``<profile>.ready``, present while the consumer is
connected and consuming, removed when it stops or loses the connection.

Probes (exit 0 healthy, 1 not, with one line saying why)::

    python -m workers.health live booking --max-age 60
    python -m workers.health ready booking
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from celery import bootsteps

from app.settings import get_settings

#: Seconds between heartbeats; probes allow several missed beats.
HEARTBEAT_SECONDS = 5.0


def health_dir() -> Path:
    """Where the probe files live (``HEALTH_DIR``)."""
    return Path(get_settings().health_dir or Path(tempfile.gettempdir()) / "magnetiq-health")


def profile_of(hostname: str) -> str:
    """The profile part of a node name (``booking@host`` -> ``booking``)."""
    return hostname.split("@", 1)[0] or "worker"


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


class Heartbeat(bootsteps.StartStopStep):
    """Worker step: touch ``<profile>.alive`` every few seconds from the worker's timer."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.path = health_dir() / f"{profile_of(worker.hostname)}.alive"
        self.entry: Any = None

    def start(self, worker: Any) -> None:
        """Beat once now, then on the worker's timer."""
        _touch(self.path)
        self.entry = worker.timer.call_repeatedly(HEARTBEAT_SECONDS, _touch, (self.path,), priority=10)

    def stop(self, worker: Any) -> None:
        """Stop beating and remove the file: a stopped worker is not alive."""
        if self.entry is not None:
            self.entry.cancel()
        self.path.unlink(missing_ok=True)


class Readiness(bootsteps.StartStopStep):
    """Consumer step: ``<profile>.ready`` exists while the consumer is consuming."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, consumer: Any) -> None:
        """The consumer is connected and its task consumer started."""
        _touch(health_dir() / f"{profile_of(consumer.hostname)}.ready")

    def stop(self, consumer: Any) -> None:
        """Connection lost or shutting down: not ready."""
        (health_dir() / f"{profile_of(consumer.hostname)}.ready").unlink(missing_ok=True)

    shutdown = stop


def check(kind: str, profile: str, max_age: float) -> tuple[bool, str]:
    """Return (healthy, reason) for a ``live`` or ``ready`` probe."""
    alive = health_dir() / f"{profile}.alive"
    try:
        age = time.time() - alive.stat().st_mtime
    except FileNotFoundError:
        return False, f"{profile}: no heartbeat file {alive} (worker not started or stopped)"
    if age > max_age:
        return (
            False,
            f"{profile}: heartbeat is {age:.0f}s old (limit {max_age:.0f}s): the worker loop is stuck",
        )
    if kind == "ready" and not (health_dir() / f"{profile}.ready").exists():
        return False, f"{profile}: not consuming (broker unreachable or still connecting)"
    return True, f"{profile}: {kind} (heartbeat {age:.0f}s ago)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one probe; the exit status is the answer."""
    parser = argparse.ArgumentParser(
        prog="python -m workers.health",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=("live", "ready"))
    parser.add_argument("profile", help="worker profile: email, booking or maintenance")
    parser.add_argument("--max-age", type=float, default=60.0, help="oldest acceptable heartbeat, seconds")
    args = parser.parse_args(argv)
    healthy, reason = check(args.kind, args.profile, args.max_age)
    print(reason, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
