"""Liveness and readiness probes against real worker processes (gevent and prefork)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.environment import TEST_BROKER_URL
from tests.support.health_probe import probe, unready_while_the_broker_is_away
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess


@pytest.mark.parametrize("profile", ["email", "booking"])
def test_probes_follow_the_worker_lifecycle(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path, profile: str
) -> None:
    # given a running worker
    worker = start_worker(profile, HEALTH_DIR=str(tmp_path))
    alive, ready = tmp_path / f"{profile}.alive", tmp_path / f"{profile}.ready"
    wait_until(lambda: alive.exists() and ready.exists(), 30, "heartbeat and readiness files")
    # then both probes pass...
    assert probe("live", profile, tmp_path).returncode == 0
    assert probe("ready", profile, tmp_path).returncode == 0
    # ...and the heartbeat keeps moving, driven by the worker's own loop
    first = alive.stat().st_mtime
    wait_until(lambda: alive.stat().st_mtime > first, 15, "a newer heartbeat", interval=0.5)
    # when the worker stops, it is neither ready nor alive
    assert worker.stop() == 0
    assert not ready.exists()
    failed = probe("live", profile, tmp_path)
    assert failed.returncode == 1
    assert "no heartbeat file" in failed.stderr


def test_a_stale_heartbeat_fails_liveness(tmp_path: Path) -> None:
    (tmp_path / "booking.alive").touch()
    (tmp_path / "booking.ready").touch()
    old = os.stat(tmp_path / "booking.alive").st_mtime - 120
    os.utime(tmp_path / "booking.alive", (old, old))
    done = probe("live", "booking", tmp_path, max_age=60)
    assert done.returncode == 1
    assert "the worker loop is stuck" in done.stderr
    assert probe("ready", "booking", tmp_path, max_age=60).returncode == 1


def test_not_consuming_is_alive_but_not_ready(tmp_path: Path) -> None:
    (tmp_path / "email.alive").touch()
    assert probe("live", "email", tmp_path).returncode == 0
    done = probe("ready", "email", tmp_path)
    assert done.returncode == 1
    assert "not consuming" in done.stderr


def test_losing_the_broker_makes_a_worker_unready_but_not_dead(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # given a booking worker that reaches RabbitMQ through a proxy
    url = urlsplit(TEST_BROKER_URL)
    proxy = TcpProxy((url.hostname or "127.0.0.1", url.port or 5672))
    try:
        proxied = url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{proxy.port}").geturl()
        start_worker("booking", HEALTH_DIR=str(tmp_path), CELERY_BROKER_URL=proxied)
        unready_while_the_broker_is_away(proxy, tmp_path)
    finally:
        proxy.close()
