"""The worker's health probes as Kubernetes runs them: ``python -m workers.health live|ready PROFILE``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.environment import worker_env
from tests.support.paths import ROOT
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until


def probe(kind: str, profile: str, health_dir: Path, max_age: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one probe against the files a worker keeps in ``health_dir``."""
    return subprocess.run(
        [sys.executable, "-m", "workers.health", kind, profile, "--max-age", str(max_age)],
        cwd=ROOT,
        env=worker_env(HEALTH_DIR=str(health_dir)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def unready_while_the_broker_is_away(proxy: TcpProxy, health_dir: Path) -> None:
    """Cut a ready booking worker's broker: it turns unready, not dead; restore it: ready again."""
    alive, ready = health_dir / "booking.alive", health_dir / "booking.ready"
    wait_until(ready.exists, 30, "the worker to be ready")
    # when the broker goes away
    proxy.cut()
    # then the worker is not ready, but its heartbeat goes on: liveness holds
    wait_until(lambda: not ready.exists(), 30, "readiness to drop", interval=0.2)
    beat = alive.stat().st_mtime
    wait_until(lambda: alive.stat().st_mtime > beat, 15, "a heartbeat while disconnected", interval=0.5)
    assert probe("live", "booking", health_dir).returncode == 0
    assert probe("ready", "booking", health_dir).returncode == 1
    # and when the broker is back, the worker is ready again
    proxy.restore()
    wait_until(ready.exists, 90, "readiness after the broker came back", interval=0.5)
