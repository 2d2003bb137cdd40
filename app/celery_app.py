"""The Celery app: every Celery option in one function, tasks listed by module path."""

from __future__ import annotations

import time
from typing import Any

from celery import Celery, signals

from app.settings import Settings, broker_scheme, get_settings
from routing import TASK_QUEUES, names, route_task

#: The Redis transports (``routing.redis_transport``), by URL scheme.
REDIS_TRANSPORTS = {
    "redis": "routing.redis_transport:Transport",
    "rediss": "routing.redis_transport:Transport",
    "sentinel": "routing.redis_transport:SentinelTransport",
}
#: The result backend class, by whether results are stored in Redis (else PostgreSQL).
RESULT_BACKENDS = {False: "app.result_backend:PostgresBackend", True: "app.redis_results:RedisResults"}
#: Task modules, imported by workers only: producers publish by name.
TASK_MODULES = (
    "app.tasks.email_tasks",
    "app.tasks.booking_tasks",
    "app.tasks.maintenance",
)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Return every Celery option the fleet sets, one key per line."""
    return {
        "broker_url": settings.celery_broker_url,
        # Redis: kombu's transport, except that a rejected message is dead-lettered.
        "broker_transport": REDIS_TRANSPORTS.get(broker_scheme(settings.celery_broker_url) or ""),
        # confirm_publish: apply_async returns only after the broker took the
        # message; without it tasks were lost (celery#9149). Redis answers every
        # write; workers add its visibility timeout (workers.entry).
        "broker_transport_options": {"confirm_publish": True} if settings.broker == "amqp" else {},
        # amqps:// and rediss://: verify the broker's certificate chain and host name.
        "broker_use_ssl": settings.broker_ssl or False,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5,  # default 4; bounded either way
        "broker_heartbeat": 30,  # default 120: notice a dead broker sooner
        "result_backend": f"{RESULT_BACKENDS[settings.results_in_redis]}+{settings.result_backend_url}",
        "result_backend_transport_options": (
            {} if settings.results_in_redis else {"synchronous_commit": settings.result_synchronous_commit}
        ),
        "result_backend_always_retry": True,  # ride out a database restart
        "result_backend_max_retries": 10,
        "result_expires": settings.result_expires,
        # Arguments may carry personal data: stored only when asked, secret fields redacted.
        "result_extended": settings.result_extended,
        # JSON, or JSON signed with the auth serializer when TASK_SIGNING_* are set.
        "accept_content": ["auth"] if settings.signing else ["json"],
        "result_accept_content": ["json"],
        "task_serializer": "auth" if settings.signing else "json",
        "security_key": settings.task_signing_key,
        "security_certificate": settings.task_signing_cert,
        "security_cert_store": settings.task_signing_cert_store,
        "security_digest": "sha256",
        "result_serializer": "json",
        "timezone": "UTC",
        "enable_utc": True,
        "task_queues": TASK_QUEUES,
        "task_routes": (route_task,),
        "task_create_missing_queues": False,  # an unknown queue is an error
        "task_default_queue": names.BOOKING,  # chord_unlock and unrouted celery.* tasks
        "task_default_exchange": names.TASKS_EXCHANGE,
        "task_default_exchange_type": "topic",  # native delayed delivery needs topic
        "task_default_routing_key": names.routing_key(names.BOOKING, "default"),
        "task_default_queue_type": "quorum",
        "task_acks_late": True,  # ack after the task ran: a crash redelivers
        "task_reject_on_worker_lost": True,  # requeue on a killed process...
        "task_acks_on_failure": False,  # ...and dead-letter a failed task
        "task_acks_on_timeout": False,  # a task killed by its time limit too
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 2,
        },
        "task_send_sent_event": True,  # Flower and metrics see publishes
        "event_exchange": names.EVENTS_EXCHANGE,
        # Off by default (a third of prefork throughput); Flower enables them
        # by broadcast while it runs, WORKER_TASK_EVENTS=true from the start.
        "worker_send_task_events": settings.worker_task_events,
        "worker_prefetch_multiplier": 1,  # profiles raise it where tasks are short
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Reject undecodable messages to the DLQ instead of acking them away.
        "worker_consumer": "workers.consumer:FleetConsumer",
        # Worker-side set-up (topology declare, per-process resources), so the
        # plain `celery -A app.celery_app worker` gets it too.
        "imports": ("workers.entry",),
        # One leader among any number of beat replicas (a PostgreSQL lease); the
        # jobs are data in MAINTENANCE_SCHEDULE, each slot recorded in periodic_runs.
        "beat_scheduler": "workers.beat:LeaderScheduler",
    }


def create_celery(settings: Settings) -> Celery:
    """Build the fleet's Celery app from settings."""
    app = Celery("magnetiq", include=list(TASK_MODULES), set_as_current=True)
    config = celery_config(settings)
    app.conf.update(config)
    # Celery reads CELERY_RESULT_BACKEND from the environment over any configuration
    # (celery.app.utils.Settings.result_backend): the fleet's own setting of that name,
    # a bare postgresql:// or redis:// URL, would pick Celery's backend for its scheme.
    # The backend class set on the app comes first.
    app.backend_cls = config["result_backend"]
    # send_task publishes each task-sent event through this dispatcher, which
    # declares the event exchange first (celery/events/dispatcher.py, _publish:
    # declare=[exchange]) and quietly buffers the event when that is refused. A
    # producer account may not declare; workers and `magnetiq topology apply`
    # declare the exchange (routing.topology.EVENTS), so publishing is enough.
    app.amqp._event_dispatcher.exchange.no_declare = True  # type: ignore[attr-defined]  # not in celery-types
    if settings.signing:
        # Registers the auth serializer (JSON inside) and disables every other
        # unsafe serializer; messages without a trusted signature are refused.
        app.setup_security(allowed_serializers={"json"}, serializer="json")
    return app


@signals.before_task_publish.connect(weak=False, dispatch_uid="magnetiq-sent-at")
def stamp_sent_at(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Stamp a task message with the epoch seconds it was published at (header ``sent_at``).

    Workers turn it into the queue-wait histogram. A stamp already there (a
    retry carries its first one forward) is kept; workers measure a delayed
    task from its ETA instead.
    """
    if headers is not None and "sent_at" not in headers:
        headers["sent_at"] = time.time()


celery_app = create_celery(get_settings())
