"""A private PgBouncer in transaction mode, in front of a PostgreSQL server, on a port of its own.

It runs as ``pgbouncer`` started here, in the foreground of its own process
(as the ``postgres`` system user when the tests run as root: PgBouncer refuses
root), with its configuration and log in a directory of its own under the system's
temporary directory (one the ``postgres`` user can reach); it is restarted or
stopped only through that process, and ``close`` removes the directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.support.ports import free_port, port_open
from tests.support.waiting import wait_until

#: Server sessions per database and user: fewer than the clients, so sessions are shared.
POOL_SIZE = 4


class PgBouncer:
    """PgBouncer with ``pool_mode = transaction``, trust authentication, every database forwarded."""

    def __init__(
        self,
        server_port: int,
        pool_size: int = POOL_SIZE,
        configure: Callable[[Path, int], tuple[str, str]] | None = None,
    ) -> None:
        """A PgBouncer to start; ``configure(directory, port)`` may give its own ini and userlist text."""
        if shutil.which("pgbouncer") is None:
            raise RuntimeError("the pooler cases need pgbouncer (Debian package pgbouncer)")
        self.base = base = Path(tempfile.mkdtemp(prefix="magnetiq-pgbouncer-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        ini, users = (
            configure(base, self.port)
            if configure is not None
            else (
                f"[databases]\n* = host=127.0.0.1 port={server_port}\n\n[pgbouncer]\n"
                f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
                f"auth_type = trust\nauth_file = {base / 'users.txt'}\nadmin_users = postgres\n"
                f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 500\n"
                f"logfile = {base / 'pgbouncer.log'}\nserver_login_retry = 1\n",
                '"postgres" ""\n',
            )
        )
        (base / "pgbouncer.ini").write_text(ini)
        (base / "users.txt").write_text(users)
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            for path in (base, *base.iterdir()):
                shutil.chown(path, self.user)
            base.chmod(0o755)

    def url(self, database: str) -> str:
        """The ``postgresql://`` URL of ``database`` through this pooler."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start PgBouncer and wait until it accepts connections."""
        user = ["-u", self.user] if self.user else []
        with (self.base / "stderr.log").open("ab") as stderr:
            self.proc = subprocess.Popen(
                ["pgbouncer", *user, str(self.base / "pgbouncer.ini")],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        wait_until(lambda: self._exited() or port_open(self.port), 30, "PgBouncer to listen")
        assert not self._exited(), self.log()

    def log(self) -> str:
        """The end of PgBouncer's log."""
        found = [self.base / name for name in ("stderr.log", "pgbouncer.log")]
        return "".join(path.read_text()[-2000:] for path in found if path.exists())

    def _exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def restart(self) -> None:
        """Stop (SIGINT: clients are cut at once) and start again on the same port."""
        self.stop()
        self.start()

    def stop(self) -> None:
        """SIGINT, PgBouncer's immediate shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)
        self.proc = None

    def close(self) -> None:
        """Stop PgBouncer and remove its directory."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
