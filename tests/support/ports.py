"""TCP ports on loopback: one free to listen on, and whether one is served."""

from __future__ import annotations

import socket

#: Every server a test starts listens here, and only here.
HOST = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = HOST) -> bool:
    """Whether something accepts TCP connections on ``host``:``port`` (127.0.0.1 unless given)."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
