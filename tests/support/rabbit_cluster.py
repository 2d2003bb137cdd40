"""A private three-node RabbitMQ cluster on this machine: own node names, ports, data, one Erlang cookie.

Each node is a ``RabbitNode`` (``tests.support.servers``) whose home holds the
cluster's cookie; the second and third join the first with
``rabbitmqctl join_cluster``. Clients get every node in one kombu failover URL
list (``;``-separated). Nodes are killed, stopped, frozen and restarted only
through the process ids they were started with.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from pathlib import Path

from tests.support.servers import RabbitNode
from tests.support.waiting import wait_until

#: Seconds of silence after which the nodes declare a peer down (Erlang's ``net_ticktime``, default 60).
NET_TICKTIME = 10
#: A node that sees less than a majority of the cluster pauses (closes its listeners, so its
#: clients move to a majority node) and rejoins when it sees the majority again; RabbitMQ's
#: advice for clusters of three or more. Quorum queues elect leaders by majority in any mode.
PARTITION_HANDLING = "pause_minority"


class RabbitCluster:
    """Three ``RabbitNode``s joined into one cluster."""

    def __init__(self, base: Path, size: int = 3) -> None:
        cookie = secrets.token_hex(16).upper()
        self.nodes = [RabbitNode(base / f"node{i}", name=f"cluster{i}") for i in range(1, size + 1)]
        for node in self.nodes:
            path = node.base / ".erlang.cookie"
            path.write_text(cookie)
            path.chmod(0o400)
            with (node.base / "rabbitmq.conf").open("a") as config:
                config.write(f"cluster_partition_handling = {PARTITION_HANDLING}\n")
            (node.base / "advanced.config").write_text(f"[{{kernel, [{{net_ticktime, {NET_TICKTIME}}}]}}].\n")
        #: Node names of the nodes frozen now (SIGSTOP): ``rabbitmqctl`` would hang on them.
        self.frozen: set[str] = set()

    def url(self, vhost: str = "") -> str:
        """Every node's AMQP URL, as a kombu failover list."""
        return ";".join(node.url(vhost) for node in self.nodes)

    def start(self) -> float:
        """Start the nodes and join the others to the first; return the seconds taken."""
        started = time.monotonic()
        first, *others = self.nodes
        first.start()
        for node in others:
            node.start()
            node.ctl("stop_app")
            node.ctl("join_cluster", first.nodename)
            node.ctl("start_app")
            node.ctl("await_startup")
        self.await_all()
        return time.monotonic() - started

    def live(self) -> RabbitNode:
        """A node that is up (for ``rabbitmqctl``)."""
        for node in self.nodes:
            if node.pid is not None and node.nodename not in self.frozen:
                return node
        raise RuntimeError("no node of the cluster is running")

    def freeze(self, node: RabbitNode) -> None:
        """SIGSTOP ``node``'s VM: it neither answers nor ticks until ``thaw``."""
        node.signal(signal.SIGSTOP)
        self.frozen.add(node.nodename)

    def thaw(self, node: RabbitNode) -> None:
        """SIGCONT a frozen node."""
        node.signal(signal.SIGCONT)
        self.frozen.discard(node.nodename)

    def await_all(self, timeout: float = 120) -> None:
        """Wait until every node runs in the cluster again."""
        wait_until(lambda: self.running() == len(self.nodes), timeout, "every node to run in the cluster")

    def node(self, nodename: str) -> RabbitNode:
        """The node named ``nodename``."""
        return next(node for node in self.nodes if node.nodename == nodename)

    def running(self) -> int:
        """Nodes running as the live nodes see the cluster: the fewest, 0 while one records a partition."""
        seen = []
        for node in self.nodes:
            if node.pid is None or node.nodename in self.frozen:
                continue
            try:
                partitioned = int(node.ctl("eval", "length(rabbit_node_monitor:partitions()).", timeout=30))
                running = int(node.ctl("eval", "length(rabbit_nodes:all_running()).", timeout=30))
            except (RuntimeError, ValueError, subprocess.TimeoutExpired):
                return 0
            seen.append(0 if partitioned else running)
        return min(seen, default=0)

    def partitioned(self, node: RabbitNode) -> bool:
        """Whether ``node`` records a partition (nodes it lost sight of while both ran)."""
        return node.ctl("eval", "rabbit_node_monitor:partitions().", timeout=30).strip() != "[]"

    def heal(self, node: RabbitNode) -> None:
        """Restart ``node``'s RabbitMQ application: it rejoins, taking the others' view.

        What an operator does for a partition ``pause_minority`` does not end:
        a node frozen past the net tick time comes back seeing everyone, so it
        never pauses, and both sides keep the partition recorded.
        """
        node.ctl("stop_app")
        node.ctl("start_app")
        node.ctl("await_startup")

    def queue_members(self) -> dict[str, tuple[str, list[str]]]:
        """Each quorum queue's leader and members (node names), by queue name."""
        out = self.live().ctl("list_queues", "name", "leader", "members", "--no-table-headers", timeout=30)
        found: dict[str, tuple[str, list[str]]] = {}
        for line in out.splitlines():
            if line.strip():
                name, leader, members = line.split("\t")
                found[name] = (leader, [m.strip() for m in members.strip("[]").split(",") if m.strip()])
        return found

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()
