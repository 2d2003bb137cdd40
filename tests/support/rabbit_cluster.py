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

from tests.support.netns import Namespace, Network
from tests.support.servers import RabbitNode
from tests.support.waiting import wait_until

#: Seconds of silence after which the nodes declare a peer down (Erlang's ``net_ticktime``, default 60).
NET_TICKTIME = 10
#: A node that sees less than a majority of the cluster pauses (closes its listeners, so its
#: clients move to a majority node) and rejoins when it sees the majority again; RabbitMQ's
#: advice for clusters of three or more. Quorum queues elect leaders by majority in any mode.
PARTITION_HANDLING = "pause_minority"


#: Erlang run on one node: a line per quorum queue of vhost "/": name, leader, members, messages.
_QUEUE_INFO = (
    "lists:foreach(fun(Q) -> "
    "{resource, _, queue, Name} = amqqueue:get_name(Q), "
    "I = rabbit_amqqueue:info(Q, [leader, members, messages]), "
    'io:format("~s\t~s\t~s\t~p~n", [Name, proplists:get_value(leader, I), '
    'lists:join(",", [atom_to_list(M) || M <- proplists:get_value(members, I)]), '
    "proplists:get_value(messages, I)]) end, "
    '[Q || Q <- rabbit_amqqueue:list(<<"/">>), amqqueue:get_type(Q) =:= rabbit_quorum_queue]), ok.'
)


#: One node's view: {partitions it records, nodes running, whether its RabbitMQ application runs}.
_VIEW = "{rabbit_node_monitor:partitions(), rabbit_nodes:all_running(), rabbit:is_running()}."


class RabbitCluster:
    """Three ``RabbitNode``s joined into one cluster."""

    def __init__(self, base: Path, size: int = 3, network: Network | None = None) -> None:
        cookie = secrets.token_hex(16).upper()
        self.network = network
        if network is None:
            self.nodes = [RabbitNode(base / f"node{i}", name=f"cluster{i}") for i in range(1, size + 1)]
        else:  # each node in a namespace of its own, named by a host name the inetrc file resolves
            base.mkdir(parents=True, exist_ok=True)
            inetrc = base / "inetrc"
            inetrc.write_text(network.inetrc())
            self.nodes = [
                RabbitNode(base / f"node{i}", name=f"part{i}", namespace=space, inetrc=inetrc)
                for i, space in enumerate(network.namespaces, start=1)
            ]
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
        """Wait until every node runs in the cluster again (the error says how each node sees it)."""
        try:
            wait_until(lambda: self.running() == len(self.nodes), timeout, "every node to run in the cluster")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; {self.views()}") from exc

    def views(self) -> str:
        """How each live node sees the cluster: the partitions it records and the nodes it runs with."""
        seen = []
        for node in self.nodes:
            if node.pid is None or node.nodename in self.frozen:
                continue
            try:
                view = node.ctl("eval", _VIEW, timeout=30).strip()
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                view = f"unreachable ({str(exc)[-300:]})"
            seen.append(f"{node.nodename}: {view}")
        return "; ".join(seen)

    def hung_in_global_sync(self, node: RabbitNode, log_offset: int) -> bool:
        """Whether ``node``'s RabbitMQ application, started again after a pause, hangs in its boot.

        RabbitMQ 3.10 on Erlang 25: a node resuming from ``pause_minority`` can
        wait forever in the boot's ``global:sync()``. RabbitMQ's own workaround
        (a faked nodedown/nodeup to ``global``, logged as "Global hang
        workaround") is a message Erlang 25's ``global`` ignores. The node
        answers ``rabbitmqctl`` but its application never starts; restarting
        the node ends it.
        """
        stuck = "Global hang workaround" in node.log_since(log_offset)
        return stuck and node.ctl("eval", "rabbit:is_running().", timeout=30).strip() == "false"

    def namespace_of(self, node: RabbitNode) -> Namespace:
        """The network namespace ``node`` runs in (clusters made with a ``network``)."""
        assert node.namespace is not None
        return node.namespace

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

    def queue_info(self) -> dict[str, tuple[str, list[str], int]]:
        """Each quorum queue's leader, members and messages, by queue name.

        Read with ``eval`` on one node rather than ``list_queues``, whose other
        nodes send their rows to the CLI directly: a namespaced node cannot
        reach the CLI's node name on this machine.
        """
        out = self.live().ctl("eval", _QUEUE_INFO, timeout=30)
        found: dict[str, tuple[str, list[str], int]] = {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 4:
                name, leader, members, messages = parts
                found[name] = (leader, members.split(","), int(messages))
        return found

    def queue_members(self) -> dict[str, tuple[str, list[str]]]:
        """Each quorum queue's leader and members (node names), by queue name."""
        return {name: (leader, members) for name, (leader, members, _) in self.queue_info().items()}

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()
