"""Private RabbitMQ and PostgreSQL servers (fault harness, broker accounts), on ports of their own.

Each server runs from a temporary directory, under its own node name or data
directory, and is stopped, killed, frozen or restarted only through the process
id it was started with: the machine's own RabbitMQ and PostgreSQL are never
touched.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from contextlib import suppress
from pathlib import Path

from tests.support.netns import Namespace
from tests.support.ports import free_port, port_open
from tests.support.processes import children as direct_children
from tests.support.processes import pid_alive
from tests.support.waiting import wait_until

#: Where Debian keeps RabbitMQ's own scripts (the /usr/sbin wrappers switch to the rabbitmq user).
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


class RabbitNode:
    """A RabbitMQ node of our own: node name, AMQP and distribution ports, data and logs in ``base``.

    With ``tls`` (CA, certificate chain and key files) it also listens for AMQP
    over TLS on ``tls_port``. With a ``namespace`` (``tests.support.netns``) it
    runs inside that network namespace, on its address, under a host name
    (``host``) that an Erlang inetrc file (``inetrc``) maps to that address.
    """

    def __init__(
        self,
        base: Path,
        name: str = "chaos",
        tls: tuple[Path, Path, Path] | None = None,
        namespace: Namespace | None = None,
        inetrc: Path | None = None,
    ) -> None:
        self.base = base
        self.namespace = namespace
        self.inetrc = inetrc
        self.host = namespace.address if namespace else "127.0.0.1"
        self.port = free_port()
        self.dist_port = free_port()
        self.tls_port = free_port() if tls else None
        self.nodename = f"magnetiq-{name}-{os.getpid()}@{namespace.host if namespace else 'localhost'}"
        self.pid: int | None = None
        self._launcher: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)
        config = (
            f"listeners.tcp.default = {self.host}:{self.port}\nloopback_users = none\nlog.console = false\n"
        )
        if tls:
            ca, chain, key = tls
            config += (
                f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\nssl_options.cacertfile = {ca}\n"
                f"ssl_options.certfile = {chain}\nssl_options.keyfile = {key}\n"
                "ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n"
            )
        (base / "rabbitmq.conf").write_text(config)
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")  # not the machine's: it names the machine's node

    @property
    def env(self) -> dict[str, str]:
        """The environment ``rabbitmq-server`` and ``rabbitmqctl`` run with for this node."""
        env = dict(os.environ)
        env.update(
            HOME=str(self.base),  # the Erlang cookie lives here
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS=self.host,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(self.base / "rabbitmq.pid"),
            ERL_EPMD_ADDRESS="127.0.0.1" if self.namespace is None else f"127.0.0.1,{self.host}",
        )
        if self.inetrc is not None:
            env["ERL_INETRC"] = str(self.inetrc)
        return env

    def url(self, vhost: str = "", user: str = "guest", password: str = "guest") -> str:
        """The AMQP URL of ``vhost`` on this node."""
        return f"amqp://{user}:{password}@{self.host}:{self.port}/{vhost}"

    def tls_url(self, vhost: str = "", user: str = "guest", password: str = "guest") -> str:
        """The AMQP-over-TLS URL of ``vhost`` on this node (its TLS listener)."""
        return f"amqps://{user}:{password}@127.0.0.1:{self.tls_port}/{vhost}"

    def start(self, timeout: float = 90) -> float:
        """Start the node (keeping its data) and wait until it serves AMQP; return the seconds taken."""
        started = time.monotonic()
        pid_file = self.base / "rabbitmq.pid"
        pid_file.unlink(missing_ok=True)
        log = (self.base / "server.out").open("ab")
        inside = self.namespace.exec_prefix() if self.namespace else []
        self._launcher = subprocess.Popen(
            [*inside, str(RABBITMQ_BIN / "rabbitmq-server")],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        wait_until(
            lambda: self._exited_early() or (pid_file.exists() and pid_file.read_text().strip()), 60, "pid"
        )
        self.pid = int(pid_file.read_text().strip())
        wait_until(
            lambda: self._exited_early() or port_open(self.port, self.host), timeout, "RabbitMQ to listen"
        )
        self.ctl("await_startup", "--timeout", str(int(timeout)))
        return time.monotonic() - started

    def _exited_early(self) -> bool:
        if self._launcher is not None and self._launcher.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited: {(self.base / 'server.out').read_text()[-2000:]}")
        return False

    def ctl(self, *args: str, timeout: float = 120) -> str:
        """Run ``rabbitmqctl`` against this node; return its output."""
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.nodename, "-q", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def add_vhost(self, vhost: str) -> None:
        """Create ``vhost`` with full rights for guest."""
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def stop_app(self) -> None:
        """Stop the RabbitMQ application (the listener closes, connections drop; the VM keeps running)."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        """Start the RabbitMQ application again after ``stop_app``."""
        self.ctl("start_app")
        self.ctl("await_startup")

    @property
    def log(self) -> Path:
        """This node's own log file."""
        return self.base / "log" / f"{self.nodename}.log"

    def log_since(self, offset: int) -> str:
        """What this node logged past byte ``offset`` (a size ``log.stat()`` gave earlier)."""
        if not self.log.exists():
            return ""
        with self.log.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def signal(self, signum: int) -> None:
        """Send ``signum`` to this node's Erlang VM (its own process id, never a name)."""
        assert self.pid is not None
        os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL the node's VM and wait until it is gone."""
        assert self.pid is not None
        pid = self.pid
        self.signal(signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 30, "RabbitMQ to die")
        self._reap()
        self.pid = None

    def stop(self) -> None:
        """Stop the node (SIGTERM, then SIGKILL after 30 s)."""
        if self.pid is None:
            return
        pid = self.pid
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not pid_alive(pid), 30, "RabbitMQ to stop")
        except TimeoutError:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._reap()
        self.pid = None

    def _reap(self) -> None:
        if self._launcher is not None:
            try:
                self._launcher.wait(10)
            except subprocess.TimeoutExpired:
                self._launcher.kill()  # the launcher shell is ours; the VM is already gone
                self._launcher.wait(10)
            self._launcher = None


class PostgresCluster:
    """A PostgreSQL cluster of our own (``initdb`` + ``pg_ctl``) on its own port and socket directory.

    With ``tls`` (certificate chain and key files) it runs with ``ssl=on``.
    """

    def __init__(self, base: Path, tls: tuple[Path, Path] | None = None) -> None:
        self.base = base
        self.tls = tls
        self.data = base / "data"
        self.port = free_port()
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin = Path(bins[-1])
        base.mkdir(parents=True, exist_ok=True)
        # initdb refuses to run as root: run the server as the postgres system user then.
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            shutil.chown(base, self.user)

    def url(self, database: str = "postgres", query: str = "") -> str:
        """The ``postgresql://`` URL of ``database`` on this cluster (libpq options in ``query``)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}{'?' if query else ''}{query}"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self.user, "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, timeout=120, check=False, cwd=self.base
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stdout}{done.stderr}")
        return done

    def init(self) -> None:
        """Create the cluster: trust authentication for the ``postgres`` user, no fsync (tests only)."""
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--no-sync")  # fmt: skip

    def start(self) -> float:
        """Start the server and wait until it accepts connections; return the seconds taken."""
        started = time.monotonic()
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if self.tls:
            chain, key = self.tls
            options += f" -c ssl=on -c ssl_cert_file={chain} -c ssl_key_file={key}"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.base / "server.log"), "-w", "-t", "60", "start")  # fmt: skip
        return time.monotonic() - started

    @property
    def pid(self) -> int:
        """The postmaster's process id, from its pid file."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def restart(self) -> None:
        """A clean restart: fast shutdown (sessions are cut), then start."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.start()

    def crash(self) -> None:
        """SIGKILL the postmaster and its backends (as a host crash would), then start it (WAL recovery)."""
        pid = self.pid
        children = direct_children(pid)
        os.kill(pid, signal.SIGKILL)
        for child in children:
            with suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        wait_until(
            lambda: not pid_alive(pid) and not any(pid_alive(c) for c in children), 30, "PostgreSQL to die"
        )
        # An unreaped zombie still answers kill(pid, 0), which PostgreSQL takes for a live postmaster.
        for lock in (self.data / "postmaster.pid", self.base / f".s.PGSQL.{self.port}.lock"):
            lock.unlink(missing_ok=True)
        self.start()

    def stop(self) -> None:
        """Stop the server immediately."""
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False
        )
