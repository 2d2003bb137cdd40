"""The deploy files authenticate: each role's compose and Kubernetes URL against a node set up as they say.

Compose: a private node configured exactly as compose mounts it (its rabbitmq.conf,
plugins and definitions.dev.json, loaded at boot), every ``${VAR:-default}`` at its
default. Kubernetes: the definitions generated as rabbitmq.yaml documents
(``python -m routing.accounts``) with the password that replaces each REPLACE_ME.
Only the host and port are rewritten to the private node's, for each URL of a
failover list (and amqps to amqp:
TLS has its own fault test).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from kombu import Connection

from app import contracts
from app.producer import send
from routing import declare_topology, names
from tests.support.deploy_files import DEPLOY, compose, compose_environment, k8s_objects, secret_value
from tests.support.environment import unavailable
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.servers import RABBITMQ_BIN, RabbitNode
from tests.support.waiting import wait_until

#: What replaces each REPLACE_ME, as an operator would.
K8S_PASSWORD = "Zr7-real-Secret"


def local(url: str, node: RabbitNode) -> str:
    """``url`` with its host and port moved to the private node (amqps -> amqp), each URL of a list."""
    if ";" in url:
        return ";".join(local(one, node) for one in url.split(";"))
    parts = urlsplit(url)
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{node.port}"
    return urlunsplit(("amqp", netloc, parts.path, "", ""))


@pytest.fixture
def private_node(tmp_path: Path) -> Iterator[RabbitNode]:
    """A private node, not started: the test configures it first."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        unavailable("the deploy-account tests need rabbitmq-server (Debian package rabbitmq-server)")
    node = RabbitNode(tmp_path / "rabbitmq", name="deploy")
    yield node
    node.stop()


def configure_as_compose(node: RabbitNode) -> None:
    """Give the node compose's rabbitmq.conf, plugins and definitions (listener ports of its own)."""
    configs = compose()["configs"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in compose()["services"]["rabbitmq"]["volumes"]}
    definitions = DEPLOY / mounted["/etc/rabbitmq/definitions.json"]
    conf = configs["rabbitmq-conf"]["content"].replace("/etc/rabbitmq/definitions.json", str(definitions))
    own_ports = f"management.tcp.port = {free_port()}\nprometheus.tcp.port = {free_port()}\n"
    config = node.base / "rabbitmq.conf"
    config.write_text(config.read_text() + conf + own_ports)
    (node.base / "enabled_plugins").write_text(configs["rabbitmq-plugins"]["content"])


def the_roles_do_their_jobs(producer: str, worker: str, monitoring: str) -> None:
    """The worker declares, the producer publishes, monitoring counts as KEDA does, the worker consumes."""
    with Connection(worker, connect_timeout=5) as connection:
        declare_topology(connection)
    with Connection(producer, connect_timeout=5) as connection, connection.Producer() as publisher:
        send(contracts.PROCESS_PAYMENT, {"payment_id": 7}, task_id="deploy-accounts-1", producer=publisher)
    with Connection(monitoring, connect_timeout=5) as connection, connection.channel() as channel:
        # what KEDA's AMQP scaler reads; a quorum queue reports a confirmed message moments later
        def depth() -> int:
            return int(channel.queue_declare(names.BOOKING, passive=True)[1])

        wait_until(lambda: depth() >= 1, 10, "the booking queue to report the message")
        assert depth() == 1
    with Connection(worker, connect_timeout=5) as connection, connection.channel() as channel:
        message = channel.basic_get(names.BOOKING)
        assert message is not None and message.headers["id"] == "deploy-accounts-1"
        channel.basic_ack(message.delivery_tag)


def test_the_compose_urls_log_in_to_the_broker_compose_configures(private_node: RabbitNode) -> None:
    # given a node configured as compose mounts it (definitions loaded at boot)
    configure_as_compose(private_node)
    private_node.start()
    # when each role connects with the URL compose gives it
    producer = local(compose_environment("beat")["CELERY_BROKER_URL"], private_node)
    worker = local(compose_environment("worker-email")["CELERY_BROKER_URL"], private_node)
    monitoring = worker.replace(
        "magnetiq-worker:magnetiq-worker-dev", "magnetiq-monitoring:magnetiq-monitoring-dev"
    )
    # then each does its job
    the_roles_do_their_jobs(producer, worker, monitoring)


def test_the_kubernetes_urls_log_in_with_the_documented_definitions(
    private_node: RabbitNode, tmp_path: Path
) -> None:
    # given the definitions generated as rabbitmq.yaml documents, with real passwords
    generated = subprocess.run(
        [sys.executable, "-m", "routing.accounts", str(DEPLOY / "rabbitmq" / "definitions.json"),
         "magnetiq-producer=-", "magnetiq-worker=-", "magnetiq-monitoring=-"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
        env=dict.fromkeys(("MAGNETIQ_PRODUCER", "MAGNETIQ_WORKER", "MAGNETIQ_MONITORING"), K8S_PASSWORD),
    )  # fmt: skip
    definitions = tmp_path / "definitions.json"
    definitions.write_text(generated.stdout)
    assert json.loads(generated.stdout)["users"][0]["password_hash"]
    private_node.start()
    private_node.ctl("import_definitions", str(definitions))
    # when each role connects with its Secret's URL, REPLACE_ME replaced
    beat = k8s_objects("Deployment")["beat"]["spec"]["template"]["spec"]["containers"][0]
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in beat["env"] if e["name"] == "CELERY_BROKER_URL"]
    (keda,) = k8s_objects("TriggerAuthentication")["magnetiq-rabbitmq"]["spec"]["secretTargetRef"]
    urls = [
        secret_value(ref["name"], ref["key"]),
        secret_value("magnetiq-secrets", "CELERY_BROKER_URL"),
        secret_value(keda["name"], keda["key"]),
    ]
    producer, worker, monitoring = (local(u.replace("REPLACE_ME", K8S_PASSWORD), private_node) for u in urls)
    # then every node's URL in the workers' and producers' failover lists logs in
    assert len(worker.split(";")) == len(producer.split(";")) == 3
    for one in [*worker.split(";"), *producer.split(";")]:
        with Connection(one, connect_timeout=5) as connection:
            connection.connect()
    # and each role does its job
    the_roles_do_their_jobs(producer, worker, monitoring)
