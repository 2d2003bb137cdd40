"""The seed's own setup as a baseline: Celery on Redis, results in the same Redis database.

Configured as the seed configures its app (one Redis URL for broker and
backend, JSON, UTC) and nothing else: default queue, default prefetch, early
acks, default result expiry. The bench gives it a Redis database of its own
(``BENCH_REDIS_URL``) and starts its worker with the seed's command line.
"""

from __future__ import annotations

import os

from celery import Celery

from tests.bench import probes

celery_app = Celery("magnetiq2", broker=os.environ["BENCH_REDIS_URL"], backend=os.environ["BENCH_REDIS_URL"])
celery_app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    timezone="UTC",
    enable_utc=True,
)
probes.register(celery_app)
