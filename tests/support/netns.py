"""Network namespaces for partition faults: one per server, joined by veth pairs to a bridge of our own.

Each namespace gets an address from a documentation range (TEST-NET-1,
192.0.2.0/24, or the next of TEST-NET-2 and -3 when a route of this machine
already uses it: some hosts sit on TEST-NET-1 themselves); the bridge holds
the range's .254 in this process's namespace, so the tests' clients reach
every server, and nothing is forwarded beyond those links. ``cut`` sets a
namespace's link down (its server can reach no one and no one it), ``mend``
sets it up again. Everything is named after this
process's id and removed by ``close``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from dataclasses import dataclass

#: The documentation ranges (RFC 5737), in the order tried; the bridge takes .254, namespaces .1, .2, ...
TEST_NETS = ("192.0.2", "198.51.100", "203.0.113")
PREFIX = 24


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def free_test_net() -> str:
    """The first documentation /24 that no route of this machine covers (its first three octets)."""
    routes = subprocess.run(
        ["ip", "-4", "route"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    for net in TEST_NETS:
        if f"{net}." not in routes:
            return net
    raise RuntimeError(f"every documentation range is routed here already: {routes}")


def available() -> str | None:
    """None when namespaces can be made here; else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"mgq-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "delete", probe)
    except (RuntimeError, FileNotFoundError, subprocess.TimeoutExpired) as exc:
        return f"ip netns is unavailable: {exc}"
    return None


@dataclass(frozen=True)
class Namespace:
    """One server's namespace: its name (for ``ip netns exec``) and address."""

    name: str
    address: str
    link: str  # the veth end on the bridge
    host: str  # the host name an Erlang inetrc file maps to ``address``

    def exec_prefix(self) -> list[str]:
        """The command prefix that runs a program inside this namespace."""
        return ["ip", "netns", "exec", self.name]


class Network:
    """``count`` namespaces on one bridge."""

    def __init__(self, count: int) -> None:
        tag = os.getpid() % 100000
        self.net = free_test_net()
        self.bridge = f"mgqbr{tag}"
        self.namespaces: list[Namespace] = []
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.net}.254/{PREFIX}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(1, count + 1):
            space = Namespace(f"magnetiq-{tag}-n{i}", f"{self.net}.{i}", f"mgq{tag}v{i}", f"mgq{tag}n{i}")
            peer = f"mgq{tag}p{i}"
            _ip("netns", "add", space.name)
            self.namespaces.append(space)
            _ip("link", "add", space.link, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", space.name)
            _ip("link", "set", space.link, "master", self.bridge)
            _ip("link", "set", space.link, "up")
            _ip("netns", "exec", space.name, "ip", "link", "set", "lo", "up")
            _ip("netns", "exec", space.name, "ip", "addr", "add", f"{space.address}/{PREFIX}", "dev", peer)
            _ip("netns", "exec", space.name, "ip", "link", "set", peer, "up")

    def inetrc(self) -> str:
        """An Erlang inetrc file's text: each namespace's host name, and this machine's, to their addresses.

        The machine's own name maps to the bridge: a ``rabbitmqctl`` run here is
        a node named after it, and every cluster node answers it directly.
        """
        names = [(space.address, space.host) for space in self.namespaces]
        names.append((f"{self.net}.254", socket.gethostname()))
        hosts = "".join(
            f'{{host, {{{address.replace(".", ",")}}}, ["{host}"]}}.\n' for address, host in names
        )
        return hosts + "{lookup, [file, native]}.\n"

    def cut(self, space: Namespace) -> None:
        """Set the namespace's link down: its server is cut off from the others and every client."""
        _ip("link", "set", space.link, "down")

    def mend(self, space: Namespace) -> None:
        """Set its link up again."""
        _ip("link", "set", space.link, "up")

    def close(self) -> None:
        """End what still runs in the namespaces (an epmd); remove them, their veth pairs and the bridge."""
        for space in self.namespaces:
            pids = subprocess.run(
                ["ip", "netns", "pids", space.name], capture_output=True, text=True, timeout=30, check=False
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for space in self.namespaces:
            subprocess.run(
                ["ip", "netns", "delete", space.name], capture_output=True, timeout=30, check=False
            )
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, timeout=30, check=False)
