"""A private Redis server on a port of its own, its AOF on, for the fault cases on the Redis broker.

It runs as ``redis-server`` started here, in the foreground of its own process,
with its data directory in ``base``; it is stopped, killed or restarted only
through that process: the machine's own Redis is never touched.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

from tests.support.ports import free_port, port_open
from tests.support.waiting import wait_until


class RedisServer:
    """``redis-server`` with ``appendonly yes`` and the given ``appendfsync``, RDB snapshots off."""

    def __init__(self, base: Path, appendfsync: str = "everysec") -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("the Redis fault cases need redis-server (Debian package redis-server)")
        self.base = base
        self.port = free_port()
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)

    def url(self, db: int = 0) -> str:
        """The ``redis://`` URL of database ``db``."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        """Start the server (replaying its AOF, if any) and wait until it accepts connections."""
        log = (self.base / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.base),
             "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "", "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        wait_until(lambda: self._exited() or port_open(self.port), 30, "Redis to listen")
        assert not self._exited(), (self.base / "redis.log").read_text()[-2000:]

    def _exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self) -> None:
        """SIGTERM: Redis writes its AOF out and exits."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, as a crash: what Redis wrote to its AOF so far is what it comes back with."""
        self._end(signal.SIGKILL)

    def _end(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)
            self.proc.wait(30)
        self.proc = None
