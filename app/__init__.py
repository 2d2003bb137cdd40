"""Magnetiq2 task fleet: Celery app, settings, tasks, domain code and producer API."""

from __future__ import annotations

__all__: list[str] = []
