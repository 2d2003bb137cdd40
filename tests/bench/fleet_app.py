"""The fleet's own app (with its worker set-up) plus the bench tasks."""

from __future__ import annotations

from tests.bench import probes
from workers.entry import celery_app

probes.register(celery_app)

__all__ = ["celery_app"]
