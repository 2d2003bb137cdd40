"""A private RabbitMQ node with the management plugin: status's unacked counts, the definitions import.

The machine's broker may run without the management plugin (and its plugins
are not ours to change), so this module starts a node of its own: own name,
ports, data directory and cookie, the same server binaries, stopped by pid.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from kombu import Connection

from app.celery_app import celery_app
from app.settings import get_settings
from routing import declare_topology, names
from tests.support.environment import unavailable
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.waiting import wait_until
from workers.cli import main
from workers.cli.queue_stats import ManagementAPI

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def management_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A RabbitMQ node with the management plugin; yields (AMQP URL, management URL)."""
    if not RABBITMQ_SERVER.exists():
        unavailable(f"{RABBITMQ_SERVER} missing: install rabbitmq-server")
    base = tmp_path_factory.mktemp("rabbitmq")
    amqp_port, http_port = free_port(), free_port()
    (base / "enabled_plugins").write_text("[rabbitmq_management].\n")
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{amqp_port}\n"
        f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {http_port}\n"
        "collect_statistics_interval = 500\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(base),  # a cookie of its own
        "RABBITMQ_NODENAME": f"magnetiq-test-{uuid.uuid4().hex[:8]}@localhost",
        "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(free_port()),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_PID_FILE": str(base / "pid"),
        "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
        "RABBITMQ_FEATURE_FLAGS_FILE": str(base / "feature_flags"),
    }
    log = (base / "server.log").open("wb")
    node = subprocess.Popen(
        [str(RABBITMQ_SERVER)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    amqp_url = f"amqp://guest:guest@127.0.0.1:{amqp_port}//"
    management_url = f"http://127.0.0.1:{http_port}"
    api = ManagementAPI(management_url, "guest", "guest", timeout=2)
    try:

        def up() -> bool:
            if node.poll() is not None:
                raise AssertionError((base / "server.log").read_text(errors="replace")[-3000:])
            try:
                return bool(api.get("overview"))
            except Exception:
                return False

        wait_until(up, 90, "the private RabbitMQ node", interval=0.5)
        yield amqp_url, management_url
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait(10)
        log.close()


@pytest.fixture
def node_broker(management_node: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Connection]:
    """The command line pointed at the private node (broker and management API), topology declared."""
    amqp_url, management_url = management_node
    monkeypatch.setenv("CELERY_BROKER_URL", amqp_url)
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", management_url)
    get_settings.cache_clear()
    with Connection(amqp_url) as connection:
        declare_topology(connection)
        yield connection
    monkeypatch.undo()
    get_settings.cache_clear()


def test_status_reads_unacked_counts_from_the_management_api(node_broker: Connection) -> None:
    # given three payments on the node's booking queue, one of them taken and not yet acked
    with celery_app.connection_for_write(node_broker.as_uri(include_password=True)) as publishing:
        for payment_id in (1, 2, 3):
            celery_app.send_task(
                "app.tasks.booking_tasks.process_payment",
                kwargs={"payment_id": payment_id},
                connection=publishing,
            )
    with node_broker.channel() as holder:
        held = holder.basic_get(names.BOOKING, no_ack=False)
        assert held is not None

        # when ops ask for the status (the API samples its counts every half second here)
        def booking_row() -> list[str] | None:
            result = CliRunner().invoke(main, ["status"])
            assert result.exit_code == 0, result.output
            row = next(line.split() for line in result.output.splitlines() if line.startswith("booking "))
            return row if row[2] == "1" else None

        row = wait_until(booking_row, 30, "the management API to count the unacked message", interval=0.5)

        # then the unacked message is counted beside the two ready ones, with no warning
        assert row[1:3] == ["2", "1"]
        holder.basic_reject(held.delivery_tag, requeue=True)
    output = CliRunner().invoke(main, ["status"]).output
    assert "unacked unknown" not in output


def send(management_url: str, method: str, path: str, body: object) -> int:
    """One write to the management API as guest; returns the HTTP status."""
    request = urllib.request.Request(
        f"{management_url}/api/{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", "Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def have_policies(api: ManagementAPI, vhost: str, queues: set[str]) -> bool:
    """Whether every one of ``queues`` has a policy applied."""
    return queues <= {name for name, info in api.queues(vhost).items() if info.get("policy")}


def test_definitions_import_and_fit_the_fleets_topology(management_node: tuple[str, str]) -> None:
    # given the broker definitions the deployments load (compose and Kubernetes mount this file)
    if not DEFINITIONS.exists():
        pytest.skip(f"{DEFINITIONS.relative_to(ROOT)} is not in this checkout")
    definitions = json.loads(DEFINITIONS.read_text())
    amqp_url, management_url = management_node
    api = ManagementAPI(management_url, "guest", "guest")

    # when a real node imports them
    assert send(management_url, "POST", "definitions", definitions) in (200, 201, 204)

    # then their vhosts, users and policies exist
    assert {v["name"] for v in definitions.get("vhosts", [])} <= {v["name"] for v in api.get("vhosts")}
    assert {u["name"] for u in definitions.get("users", [])} <= {u["name"] for u in api.get("users")}
    policies = definitions.get("policies", [])
    queue_policies = [p for p in policies if p.get("apply-to", "all") in ("all", "queues", "quorum_queues")]
    assert {(p["vhost"], p["name"]) for p in policies} <= {
        (p["vhost"], p["name"]) for p in api.get("policies")
    }
    # and in each vhost the fleet declares its topology over them without a conflict,
    # every fleet queue a policy pattern matches getting a policy
    for vhost in [v["name"] for v in definitions.get("vhosts", [])]:
        send(
            management_url,
            "PUT",
            f"permissions/{quote(vhost, safe='')}/guest",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )
        with Connection(f"{amqp_url.rstrip('/')}/{quote(vhost, safe='')}") as connection:
            declared = declare_topology(connection)
        queues = set(api.queues(vhost))
        expected = {
            name
            for name in declared
            if name in queues
            and any(p["vhost"] == vhost and re.search(p["pattern"], name) for p in queue_policies)
        }
        # the API reports a queue's policy with its stats, a moment later
        wait_until(
            partial(have_policies, api, vhost, expected), 30, f"policies on {vhost} {sorted(expected)}", 0.5
        )
