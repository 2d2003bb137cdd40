"""Periodic maintenance: session expiry and the beat schedule."""

from __future__ import annotations

__all__: list[str] = []
