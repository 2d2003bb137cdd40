"""TLS to RabbitMQ and PostgreSQL: a real worker runs a task over ``amqps://`` and ``verify-full``.

A private RabbitMQ node with a TLS listener and a private PostgreSQL cluster
with ``ssl=on`` serve a certificate from a test CA (trustme). The fleet trusts
that CA through ``BROKER_TLS_CA_FILE`` and ``sslrootcert`` in ``DATABASE_URL``;
a certificate from any other CA is refused by both.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import trustme
from kombu import Connection
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from app import contracts
from app.db import engine_for
from app.migrate import upgrade
from app.producer import send
from app.settings import Settings, sqlalchemy_url
from routing import declare_topology
from tests.chaos.workers import Worker
from tests.support.servers import PostgresCluster, RabbitNode
from tests.support.waiting import wait_until

DATABASE = "magnetiq"


@dataclass
class TlsServers:
    """The TLS servers, the files of their CA, and a CA nobody trusts."""

    rabbit: RabbitNode
    postgres: PostgresCluster
    ca: Path
    stranger_ca: Path
    base: Path

    def settings(self, ca: Path | None = None) -> Settings:
        """The fleet's settings for these servers, trusting ``ca`` (theirs by default)."""
        trusted = ca or self.ca
        return Settings(
            celery_broker_url=self.rabbit.tls_url(),
            broker_tls_ca_file=str(trusted),
            database_url=self.postgres.url(DATABASE, f"sslmode=verify-full&sslrootcert={trusted}"),
        )


@pytest.fixture(scope="module")
def servers() -> Iterator[TlsServers]:
    """Both servers with a trustme certificate for 127.0.0.1; stopped (by process id) afterwards."""
    base = Path(tempfile.mkdtemp(prefix="magnetiq-tls-"))
    base.chmod(0o755)  # the postgres user reads its certificate here when the tests run as root
    ca, stranger = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    names = ("ca.pem", "stranger-ca.pem", "chain.pem", "key.pem", "pg-key.pem")
    files = {name: base / name for name in names}
    ca.cert_pem.write_to_path(str(files["ca.pem"]))
    stranger.cert_pem.write_to_path(str(files["stranger-ca.pem"]))
    files["chain.pem"].write_bytes(b"".join(pem.bytes() for pem in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(files["key.pem"]))
    server.private_key_pem.write_to_path(str(files["pg-key.pem"]))
    files["pg-key.pem"].chmod(0o600)  # PostgreSQL refuses a key others can read
    rabbit = RabbitNode(base / "rabbitmq", "tls", (files["ca.pem"], files["chain.pem"], files["key.pem"]))
    postgres = PostgresCluster(base / "postgres", (files["chain.pem"], files["pg-key.pem"]))
    if os.geteuid() == 0:
        shutil.chown(files["pg-key.pem"], postgres.user)
    try:
        postgres.init()
        postgres.start()
        rabbit.start()
        yield TlsServers(rabbit, postgres, files["ca.pem"], files["stranger-ca.pem"], base)
    finally:
        rabbit.stop()
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


def tls_engine(settings: Settings) -> Engine:
    return engine_for(sqlalchemy_url(settings.database_url))


def test_a_worker_runs_a_task_over_tls(servers: TlsServers, tmp_path: Path) -> None:
    # given the database migrated and the topology declared, both over TLS with the CA trusted
    settings = servers.settings()
    upgrade(settings.database_url)
    engine = tls_engine(settings)
    with engine.begin() as db:
        assert db.execute(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar_one()
        db.execute(
            text(
                "INSERT INTO sessions (id, user_id, created_at) VALUES ('old', 1, now() - interval '30 days')"
            )
        )
    with Connection(settings.celery_broker_url, ssl=settings.broker_ssl, connect_timeout=5) as broker:
        declare_topology(broker)

    # when a real maintenance worker, configured only through the environment, takes a task
    env = dict(os.environ)
    env.update(
        CELERY_BROKER_URL=settings.celery_broker_url,
        BROKER_TLS_CA_FILE=str(servers.ca),
        DATABASE_URL=servers.postgres.url(DATABASE, f"sslmode=verify-full&sslrootcert={servers.ca}"),
        CHAOS_LEDGER_DSN="",
        HEALTH_DIR=str(tmp_path / "health"),
        METRICS_PORT="0",
    )
    worker = Worker("maintenance", tmp_path / "maintenance.log", env, [])
    try:
        with (
            Connection(settings.celery_broker_url, ssl=settings.broker_ssl, connect_timeout=5) as broker,
            broker.Producer() as producer,
        ):
            send(contracts.CLEANUP_OLD_SESSIONS, {}, task_id="over-tls-1", producer=producer)

        # then it runs end to end: the old session deleted and the result stored, over TLS only
        def done() -> bool:
            assert worker.proc.poll() is None, worker.log()[-4000:]
            with engine.connect() as db:
                status = db.execute(text("SELECT status FROM task_results WHERE task_id = 'over-tls-1'"))
                return status.scalar() == "SUCCESS"

        wait_until(done, 90, "the task's result over TLS")
        with engine.connect() as db:
            assert db.execute(text("SELECT count(*) FROM sessions")).scalar_one() == 0
            plain = db.execute(
                text(
                    "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                    "WHERE client_addr IS NOT NULL AND NOT ssl"
                )
            ).scalar_one()
        assert plain == 0  # every TCP session, the worker's included, is encrypted
        connections = servers.rabbit.ctl("list_connections", "ssl", "--no-table-headers").split()
        assert connections and set(connections) == {"true"}  # the worker's AMQP connections too
    finally:
        worker.stop()
        engine.dispose()


def test_the_broker_refuses_an_untrusted_ca(servers: TlsServers) -> None:
    settings = servers.settings(servers.stranger_ca)
    connection = Connection(settings.celery_broker_url, ssl=settings.broker_ssl, connect_timeout=5)
    with pytest.raises((ssl.SSLError, KombuOperationalError), match="CERTIFICATE_VERIFY_FAILED"):
        connection.ensure_connection(max_retries=0)
    connection.release()


def test_the_broker_certificate_must_name_the_host(servers: TlsServers) -> None:
    # the certificate names 127.0.0.1 and localhost; reached under another name, it is refused
    settings = servers.settings()
    options = {**(settings.broker_ssl or {}), "server_hostname": "broker.example.com"}
    connection = Connection(settings.celery_broker_url, ssl=options, connect_timeout=5)
    with pytest.raises((ssl.SSLError, KombuOperationalError), match="CERTIFICATE_VERIFY_FAILED"):
        connection.ensure_connection(max_retries=0)
    connection.release()


def test_postgres_refuses_an_untrusted_ca(servers: TlsServers) -> None:
    settings = servers.settings(servers.stranger_ca)
    engine = tls_engine(settings)
    with pytest.raises(OperationalError, match="certificate verify failed"), engine.connect():
        pass
    engine.dispose()
    dsn = servers.postgres.url("postgres", f"sslmode=verify-ca&sslrootcert={servers.stranger_ca}")
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        psycopg2.connect(dsn, connect_timeout=5)
