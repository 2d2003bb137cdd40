"""The ``celery -A`` target: the app plus worker-side signals and bootsteps.

``app.celery_app`` lists this module in ``imports``, so a plain
``celery -A app.celery_app worker`` loads the same set-up.
"""

from __future__ import annotations

from app.celery_app import celery_app
from app.settings import get_settings
from workers import metrics
from workers.health import Heartbeat, Readiness
from workers.signals import DeclareTopology, green_psycopg

green_psycopg()
celery_app.steps["consumer"].add(DeclareTopology)
celery_app.steps["consumer"].add(Readiness)
celery_app.steps["worker"].add(Heartbeat)
metrics.install(get_settings())

__all__ = ["celery_app"]
