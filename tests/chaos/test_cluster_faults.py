"""Faults on a three-node RabbitMQ cluster under payments, emails and maintenance runs."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.chaos.cluster_harness import ClusterChaos
from tests.chaos.operations import Operation, maintenance_runs
from tests.support.rabbit_cluster import NET_TICKTIME

#: Seconds a node cut off and reconnected has to run in the cluster again by itself.
REJOIN = 60
#: Seconds between operations, so the producer is still publishing when the faults land.
PACE = 0.05


def under_load(chaos: ClusterChaos, case: str, count: int, fault: Callable[[list[Operation]], None]) -> None:
    """Drain ``count`` payments, a fifth as many welcome emails and maintenance runs while ``fault`` runs.

    A booking, an email and a maintenance worker take them; every payment must
    be charged and processed once, every email accepted once by the SMTP
    server, every maintenance slot run once.
    """
    emails = chaos.emails(count // 5, first=count + 1)  # before the workers: they get its address
    maintenance = maintenance_runs(count // 5)
    chaos.start_worker("booking", "--concurrency", "2", delay=0.05)
    chaos.start_worker("email", "--concurrency", "20")
    chaos.start_worker("maintenance")
    payments = chaos.payments(count)
    operations: list[Operation] = []
    for i, payment in enumerate(payments):  # an email and a maintenance run after every fifth payment
        operations.append(payment)
        if i % 5 == 4:
            operations += [emails[i // 5], maintenance[i // 5]]
    report = chaos.run(case, operations, lambda: fault(operations), interval=PACE)
    report.recovery = chaos.recovery()
    if chaos.remarks:
        report.case += f" ({'; '.join(chaos.remarks)})"
    assert report.succeeded == len(operations)


def test_the_booking_leader_killed_twice(cluster_chaos: ClusterChaos) -> None:
    chaos = cluster_chaos

    def fault(operations: list[Operation]) -> None:
        for published, executed in ((60, 30), (160, 110)):
            chaos.midway(operations, published, executed)
            leader = chaos.leader("booking")
            chaos.fault_at()
            leader.kill()
            time.sleep(3)
            leader.start()
            chaos.cluster.await_all()

    under_load(chaos, "cluster: booking leader killed (-9) twice", 300, fault)


def test_one_node_stopped_and_started(cluster_chaos: ClusterChaos) -> None:
    chaos = cluster_chaos

    def fault(operations: list[Operation]) -> None:
        chaos.midway(operations, 60, 30)
        leader = chaos.leader("booking")
        chaos.fault_at()
        leader.stop()  # SIGTERM: RabbitMQ's orderly shutdown; its quorum queue leaders move
        time.sleep(5)
        leader.start()
        chaos.cluster.await_all()

    under_load(chaos, "cluster: booking leader's node stopped, started", 200, fault)


def test_one_node_frozen_past_the_net_tick_time(cluster_chaos: ClusterChaos) -> None:
    chaos = cluster_chaos

    def fault(operations: list[Operation]) -> None:
        chaos.midway(operations, 60, 30)
        leader = chaos.leader("booking")
        chaos.fault_at()
        chaos.cluster.freeze(leader)
        time.sleep(2 * NET_TICKTIME)  # the other two declare it down and elect new leaders
        chaos.cluster.thaw(leader)
        time.sleep(NET_TICKTIME)
        if chaos.cluster.partitioned(leader):  # the runbook's step: restart the node that was away
            chaos.cluster.heal(leader)
        chaos.cluster.await_all()

    under_load(chaos, f"cluster: booking leader frozen {2 * NET_TICKTIME} s (SIGSTOP)", 200, fault)


def test_a_rolling_restart(cluster_chaos: ClusterChaos) -> None:
    chaos = cluster_chaos

    def fault(operations: list[Operation]) -> None:
        chaos.midway(operations, 40, 20)
        for node in chaos.cluster.nodes:
            chaos.fault_at()
            node.stop()
            node.start()
            chaos.cluster.await_all()

    under_load(chaos, "cluster: rolling restart of all three nodes", 300, fault)


def test_one_node_partitioned_from_the_other_two(partition_chaos: ClusterChaos) -> None:
    chaos = partition_chaos
    network = chaos.cluster.network
    assert network is not None

    def fault(operations: list[Operation]) -> None:
        chaos.midway(operations, 60, 30)
        leader = chaos.leader("booking")
        logged = leader.log.stat().st_size
        chaos.fault_at()
        network.cut(chaos.cluster.namespace_of(leader))  # its link down: no one reaches it, nor it anyone
        time.sleep(3 * NET_TICKTIME)  # the majority declares it down; it pauses itself (pause_minority)
        network.mend(chaos.cluster.namespace_of(leader))
        try:
            chaos.cluster.await_all(timeout=REJOIN)
        except TimeoutError:
            if not chaos.cluster.hung_in_global_sync(leader, logged):
                raise
            # The runbook's step for a node whose boot hangs after a pause (deploy/README.md):
            # restart it. The drain goes on meanwhile; the counts below hold either way.
            chaos.remarks.append("boot hung in global:sync, node restarted")
            leader.stop()
            leader.start()
            chaos.cluster.await_all()

    under_load(chaos, f"cluster: booking leader partitioned {3 * NET_TICKTIME} s, healed", 200, fault)
