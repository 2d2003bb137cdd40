"""Plain Celery: stock settings and the stock database result backend, same queues.

Only what the comparison needs is set: the same broker, the same quorum queues
and exchange, JSON, and the same ack and prefetch settings as the fleet, so the
measured difference is the fleet's own work (result backend, publishing,
worker set-up), not the queue shape.
"""

from __future__ import annotations

import os

from celery import Celery

from app.settings import sqlalchemy_url
from routing import TASK_QUEUES, names
from tests.bench import probes

celery_app = Celery(
    "plain",
    broker=os.environ["CELERY_BROKER_URL"],
    backend="db+" + sqlalchemy_url(os.environ["DATABASE_URL"]),
)
celery_app.conf.update(
    task_queues=TASK_QUEUES,
    task_default_queue=names.BOOKING,
    task_default_exchange=names.TASKS_EXCHANGE,
    task_default_exchange_type="topic",
    task_default_routing_key="booking.default",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH", "1")),
    broker_transport_options={"confirm_publish": os.environ.get("BENCH_CONFIRM") == "1"},
    database_table_names={"task": "plain_celery_taskmeta", "group": "plain_celery_groupmeta"},
)
probes.register(celery_app)
