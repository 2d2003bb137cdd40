"""Liveness and readiness probes against real worker processes (gevent and prefork)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.environment import TEST_BROKER_URL, worker_env
from tests.support.paths import ROOT
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess


def probe(kind: str, profile: str, health_dir: Path, max_age: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.health", kind, profile, "--max-age", str(max_age)],
        cwd=ROOT,
        env=worker_env(HEALTH_DIR=str(health_dir)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


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


class TcpProxy:
    """A loopback TCP proxy to RabbitMQ that a test can cut and restore."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refusing = False
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            self.open += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def cut(self) -> None:
        """Drop every connection and refuse new ones: the broker is gone for the worker."""
        self.refusing = True
        for sock in self.open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.open.clear()

    def restore(self) -> None:
        """Let connections through again."""
        self.refusing = False

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_losing_the_broker_makes_a_worker_unready_but_not_dead(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # given a booking worker that reaches RabbitMQ through a proxy
    url = urlsplit(TEST_BROKER_URL)
    proxy = TcpProxy((url.hostname or "127.0.0.1", url.port or 5672))
    try:
        proxied = url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{proxy.port}").geturl()
        start_worker("booking", HEALTH_DIR=str(tmp_path), CELERY_BROKER_URL=proxied)
        alive, ready = tmp_path / "booking.alive", tmp_path / "booking.ready"
        wait_until(ready.exists, 30, "the worker to be ready")
        # when the broker goes away
        proxy.cut()
        # then the worker is not ready, but its heartbeat goes on: liveness holds
        wait_until(lambda: not ready.exists(), 30, "readiness to drop", interval=0.2)
        beat = alive.stat().st_mtime
        wait_until(lambda: alive.stat().st_mtime > beat, 15, "a heartbeat while disconnected", interval=0.5)
        assert probe("live", "booking", tmp_path).returncode == 0
        assert probe("ready", "booking", tmp_path).returncode == 1
        # and when the broker is back, the worker is ready again
        proxy.restore()
        wait_until(ready.exists, 90, "readiness after the broker came back", interval=0.5)
    finally:
        proxy.close()
