"""A real HTTP payment provider on loopback (tests, bench): honours ``Idempotency-Key``, counts charges.

``POST /charges`` and ``POST /refunds`` take JSON and an ``Idempotency-Key``
header; a repeat with the same key returns the first reply and moves no money
(a repeat with a different body is refused with 422, as real providers do).
Amounts listed in ``declined`` get 402; ``unavailable`` answers 503 that many
times before serving again.
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Ledger:
    """What the provider did: replies by idempotency key, charges and refunds made."""

    replies: dict[str, tuple[dict[str, Any], int, dict[str, Any]]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: int = 0
    declined: set[int] = field(default_factory=set)
    unavailable: int = 0
    #: When set, the next charge is made, then its reply waits for this event (a reply lost in flight).
    hold_next_charge: threading.Event | None = None
    #: Charges whose reply is being held, and the body of each, in order.
    held: int = 0
    held_bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, path: str, key: str | None, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Serve one request under the lock, so concurrent repeats of a key are one charge."""
        with self.lock:
            self.requests += 1
            if self.unavailable > 0:
                self.unavailable -= 1
                return 503, {"error": "try again"}
            if not key:
                return 400, {"error": "Idempotency-Key required"}
            if key in self.replies:
                first_body, status, reply = self.replies[key]
                return (status, reply) if first_body == body else (422, {"error": "key reused"})
            status, reply = self._new(path, body)
            self.replies[key] = (body, status, reply)
            return status, reply

    def _new(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/charges":
            if body["amount_cents"] in self.declined:
                return 402, {"error": "card declined"}
            charge = {"id": f"ch_{len(self.charges) + 1}", "status": "charged", **body}
            self.charges[charge["id"]] = charge
            return 201, charge
        if path == "/refunds":
            charge = self.charges.get(body["charge"])
            if charge is None:
                return 404, {"error": "no such charge"}
            refund = {"id": f"re_{len(self.refunds) + 1}", **body}
            self.refunds[refund["id"]] = refund
            charge["status"] = "refunded"
            return 201, refund
        return 404, {"error": "not found"}

    def reset(self) -> None:
        """Forget every key, charge and refund (between tests)."""
        with self.lock:
            self.replies.clear()
            self.charges.clear()
            self.refunds.clear()
            self.requests = self.unavailable = self.held = 0
            self.held_bodies.clear()
            self.declined.clear()
            self.hold_next_charge = None

    def hold(self, path: str, body: dict[str, Any]) -> threading.Event | None:
        """Take the pending hold if this is a charge (one request is held per ``hold_next_charge``)."""
        with self.lock:
            if path != "/charges" or self.hold_next_charge is None:
                return None
            event, self.hold_next_charge = self.hold_next_charge, None
            self.held += 1
            self.held_bodies.append(body)
            return event

    def write_statement(self, path: Path, extra: list[dict[str, Any]] | None = None) -> Path:
        """Write the provider's statement CSV: one line per charge, then any ``extra`` lines."""
        lines = [
            {"reference": c["id"], **{k: c[k] for k in ("amount_cents", "currency", "status")}}
            for c in self.charges.values()
        ]
        with path.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=["reference", "amount_cents", "currency", "status"])
            writer.writeheader()
            writer.writerows([*lines, *(extra or [])])
        return path


class _Handler(BaseHTTPRequestHandler):
    ledger: Ledger

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        status, reply = self.ledger.handle(self.path, self.headers.get("Idempotency-Key"), body)
        held = self.ledger.hold(self.path, body)
        if held is not None:
            held.wait(60)
        data = json.dumps(reply).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client is gone (a test killed it mid-request)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""


@contextmanager
def running_provider() -> Iterator[tuple[str, Ledger]]:
    """Serve a fresh provider on a free loopback port; yield its base URL and ledger."""
    ledger = Ledger()
    handler = type("Handler", (_Handler,), {"ledger": ledger})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", ledger
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


_shared_stack = ExitStack()
_shared: list[tuple[str, Ledger]] = []


def shared_provider() -> tuple[str, Ledger]:
    """The tests' payment provider (real HTTP on loopback), started on first use: (base URL, ledger).

    One per process: the ``payment_provider`` fixture and ``worker_env`` (which
    points worker processes at it) both hand out this one.
    """
    if not _shared:
        _shared.append(_shared_stack.enter_context(running_provider()))
    return _shared[0]


def stop_shared_provider() -> None:
    """Stop the shared provider (the next ``shared_provider()`` starts a fresh one)."""
    _shared_stack.close()
    _shared.clear()
