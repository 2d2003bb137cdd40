"""Celery tasks: thin adapters from a message to one domain call."""

from __future__ import annotations

__all__: list[str] = []
