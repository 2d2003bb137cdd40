"""The payment provider behind a small protocol, and its HTTP client (standard library, with timeouts).

The provider deduplicates by the ``Idempotency-Key`` header: a charge or refund
repeated with the same key returns the first one's result and moves no money.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


class PaymentDeclined(Exception):
    """The provider refused the charge for good (card declined, bad request): never retried."""


class PaymentProviderUnavailable(Exception):
    """The provider could not be reached or failed (5xx, timeout, 429): retried with backoff."""


class PaymentProviderNotConfigured(RuntimeError):
    """``PAYMENT_PROVIDER_URL`` is unset: no charge can be made until it is."""


@dataclass(frozen=True)
class Charge:
    """A charge or refund the provider accepted."""

    reference: str


class PaymentProvider(Protocol):
    """Moves money; every call carries an idempotency key."""

    def charge(self, key: str, amount_cents: int, currency: str, description: str) -> Charge:
        """Charge once per ``key``; a repeat returns the first charge."""

    def refund(self, key: str, charge_reference: str, amount_cents: int) -> Charge:
        """Refund a charge once per ``key``; a repeat returns the first refund."""


class HttpPaymentProvider:
    """JSON over HTTP: ``POST /charges`` and ``POST /refunds`` with an ``Idempotency-Key`` header."""

    def __init__(self, base_url: str | None, timeout: float = 10.0) -> None:
        self._base_url = base_url.rstrip("/") if base_url else None
        self._timeout = timeout

    def charge(self, key: str, amount_cents: int, currency: str, description: str) -> Charge:
        """Charge through ``POST /charges`` (see ``PaymentProvider``)."""
        body = {"amount_cents": amount_cents, "currency": currency, "description": description}
        return Charge(self._post("/charges", key, body)["id"])

    def refund(self, key: str, charge_reference: str, amount_cents: int) -> Charge:
        """Refund through ``POST /refunds`` (see ``PaymentProvider``)."""
        body = {"charge": charge_reference, "amount_cents": amount_cents}
        return Charge(self._post("/refunds", key, body)["id"])

    def _post(self, path: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._base_url is None:
            raise PaymentProviderNotConfigured("PAYMENT_PROVIDER_URL is not set")
        request = urllib.request.Request(
            f"{self._base_url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                reply: dict[str, Any] = json.loads(response.read())
                return reply
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode(errors="replace")
            if exc.code >= 500 or exc.code in (408, 409, 429):
                raise PaymentProviderUnavailable(f"provider {path}: HTTP {exc.code}") from None
            raise PaymentDeclined(f"provider {path}: HTTP {exc.code}: {detail}") from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
            raise PaymentProviderUnavailable(f"provider {path}: {exc}") from None
