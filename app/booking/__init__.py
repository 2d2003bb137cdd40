"""Bookings and payments: the domain behind the booking queue."""

from __future__ import annotations

__all__: list[str] = []
