"""The ``celery -A`` target: the app plus worker-side signals and bootsteps.

``app.celery_app`` lists this module in ``imports``, so a plain
``celery -A app.celery_app worker`` loads the same set-up.
"""

from __future__ import annotations

from app.celery_app import celery_app
from app.settings import get_settings
from workers import metrics, profiles
from workers.cancels import Cancels
from workers.health import Heartbeat, Readiness
from workers.memory import MemoryGuard
from workers.signals import DeclareTopology, green_psycopg
from workers.timers import TimerSweep

#: Seconds between a Redis worker's sweeps for messages a dead worker left unacked.
REDIS_RESTORE_SECONDS = 10

green_psycopg()
settings = get_settings()
if settings.broker == "redis":
    # Redelivery of what a dead worker held: after the visibility timeout, found
    # by a sweep every 10 s (kombu's default sweeps every 10th tick: 100 s).
    celery_app.conf.broker_transport_options.update(
        visibility_timeout=profiles.redis_visibility_timeout(
            settings.task_time_limit, settings.redis_eta_horizon
        ),
        unacked_restore_interval=REDIS_RESTORE_SECONDS,
        unacked_restore_throttle=1,
    )
celery_app.steps["consumer"].add(DeclareTopology)
celery_app.steps["consumer"].add(Readiness)
celery_app.steps["consumer"].add(Cancels)
celery_app.steps["worker"].add(Heartbeat)
celery_app.steps["worker"].add(MemoryGuard)
celery_app.steps["worker"].add(TimerSweep)
metrics.install(settings)

__all__ = ["celery_app"]
