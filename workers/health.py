"""Health probes: liveness from a heartbeat the worker's own loop keeps, readiness from its consumer.

Liveness never touches the broker (a broker blip must not restart every
worker, celery#4079): the worker's own timer ticks, and a native thread keeps
``<profile>.alive`` fresh while the ticks keep coming, or while the consumer
is reconnecting (Celery's loop then waits inside its retry policy, by
design). The file goes stale when a connected worker's loop stops. Readiness
is ``<profile>.ready``, present while the consumer is connected and
consuming, removed when it stops or loses the connection.

Probes (exit 0 healthy, 1 not, with one line saying why)::

    python -m workers.health live booking --max-age 60
    python -m workers.health ready booking
"""

from __future__ import annotations

import _thread
import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from celery import bootsteps

from app.settings import get_settings
from workers.timers import RepeatingStep

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


class _State:
    """What the heartbeat thread knows: when the worker's loop last ticked, and whether it consumes."""

    last_tick = 0.0
    consuming = False


def _keep_beating(path: Path) -> None:
    # A native thread: it runs even while the worker's loop is busy reconnecting.
    while _State.last_tick >= 0:
        loop_alive = time.monotonic() - _State.last_tick < 3 * HEARTBEAT_SECONDS
        # While the consumer reconnects, Celery's loop waits inside its retry
        # policy: that is the worker working as designed, not a stuck worker.
        if loop_alive or not _State.consuming:
            _touch(path)
        time.sleep(HEARTBEAT_SECONDS)


class Heartbeat(RepeatingStep):
    """Worker step: keep ``<profile>.alive`` fresh while the worker's loop ticks (or reconnects)."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.path = health_dir() / f"{profile_of(worker.hostname)}.alive"

    def start(self, worker: Any) -> None:
        """Tick from the worker's own timer; a native thread turns ticks into the file."""
        _touch(self.path)
        _State.last_tick = time.monotonic()
        self.repeat(worker, HEARTBEAT_SECONDS, _tick)
        _start_native_thread(_keep_beating, (self.path,))

    def stop(self, worker: Any) -> None:
        """Stop beating and remove the file: a stopped worker is not alive."""
        _State.last_tick = -1.0
        super().stop(worker)
        self.path.unlink(missing_ok=True)


def _tick() -> None:
    _State.last_tick = time.monotonic()


def _start_native_thread(target: Any, args: tuple[Any, ...]) -> None:
    monkey = sys.modules.get("gevent.monkey")  # imported (and patching) under the gevent pool only
    if monkey is None:
        _thread.start_new_thread(target, args)
        return
    monkey.get_original("_thread", "start_new_thread")(target, args)


class Readiness(bootsteps.StartStopStep):
    """Consumer step: ``<profile>.ready`` exists while the consumer is consuming."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, consumer: Any) -> None:
        """The consumer is connected and its task consumer started."""
        _State.consuming = True
        _touch(health_dir() / f"{profile_of(consumer.hostname)}.ready")

    def stop(self, consumer: Any) -> None:
        """Connection lost or shutting down: not ready."""
        _State.consuming = False
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
