"""The Kubernetes database URL works through the PgBouncer the manifests ship, configured as they ship it.

A private PostgreSQL gets the role and database ``DATABASE_URL`` names; a
private PgBouncer runs deploy/k8s/pgbouncer.yaml's ini and userlist with only
its listen address, the server's address and file paths made local, and
REPLACE_ME replaced as an operator would. The fleet then migrates and stores
results through it with the Secret's URL (host and port moved to the pooler).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from celery import states

from app.celery_app import celery_app
from app.migrate import upgrade
from app.result_backend import PostgresBackend
from tests.support.deploy_files import k8s_objects, secret_value
from tests.support.environment import unavailable
from tests.support.pgbouncer import PgBouncer
from tests.support.servers import PostgresCluster

pytestmark = pytest.mark.integration

#: What replaces each REPLACE_ME, as an operator would.
PASSWORD = "Zr7-real-Secret"


@pytest.fixture
def server() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster (the one the pooler's ``[databases]`` entry points at)."""
    if shutil.which("pgbouncer") is None:
        unavailable("pgbouncer is not installed (Debian package pgbouncer)")
    base = Path(tempfile.mkdtemp(prefix="magnetiq-deploy-pg-"))
    base.chmod(0o755)  # the postgres user runs it when the tests run as root
    cluster = PostgresCluster(base / "postgres")
    cluster.init()
    cluster.start()
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_the_kubernetes_database_url_migrates_and_stores_results_through_the_shipped_pgbouncer(
    server: PostgresCluster,
) -> None:
    # given the role and database the Secret's DATABASE_URL names, on the server
    shipped = urlsplit(secret_value("magnetiq-secrets", "DATABASE_URL").replace("REPLACE_ME", PASSWORD))
    assert shipped.hostname == "pgbouncer.magnetiq.svc"
    user, database = shipped.username, shipped.path.lstrip("/")
    admin = psycopg2.connect(server.url())
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{user}" LOGIN PASSWORD %s', (PASSWORD,))
        cursor.execute(f'CREATE DATABASE "{database}" OWNER "{user}"')
    admin.close()

    # and PgBouncer run from the manifest's ini and userlist
    config = k8s_objects("ConfigMap")["pgbouncer-config"]["data"]["pgbouncer.ini"]
    userlist = k8s_objects("Secret")["pgbouncer-auth"]["stringData"]["userlist.txt"]

    def configure(directory: Path, port: int) -> tuple[str, str]:
        ini = config.replace("host=postgres.magnetiq.svc port=5432", f"host=127.0.0.1 port={server.port}")
        for key, value in (
            ("listen_addr", "127.0.0.1"),
            ("listen_port", str(port)),
            ("auth_file", str(directory / "users.txt")),
        ):
            ini, found = re.subn(rf"^{key} = .*$", f"{key} = {value}", ini, flags=re.M)
            assert found == 1, key
        ini += f"logfile = {directory / 'pgbouncer.log'}\n"
        return ini, userlist.replace("REPLACE_ME", PASSWORD)

    pooler = PgBouncer(server.port, configure=configure)
    pooler.start()
    try:
        # when the fleet uses the Secret's URL, moved to the pooler
        url = urlunsplit(shipped._replace(netloc=f"{user}:{PASSWORD}@127.0.0.1:{pooler.port}"))
        upgrade(url)
        backend = PostgresBackend(app=celery_app, url=url)
        task_id = str(uuid.uuid4())
        backend.store_result(task_id, {"through": "pgbouncer"}, states.SUCCESS)

        # then the migrations ran and the result reads back through it
        assert backend.get_task_meta(task_id)["result"] == {"through": "pgbouncer"}
        # and a wrong password is refused by the pooler
        with pytest.raises(psycopg2.OperationalError, match="SASL authentication failed"):
            psycopg2.connect(url.replace(PASSWORD, "wrong"), connect_timeout=5).close()
    finally:
        pooler.close()
