"""Task-name prefix -> queue: the router Celery consults before each publish."""

from __future__ import annotations

from typing import Any

from routing import names

#: Task module prefix -> work queue. Keyed on the dotted task name, so routing
#: never imports task code.
PREFIXES: dict[str, str] = {
    "app.tasks.email_tasks.": names.EMAIL,
    "app.tasks.booking_tasks.": names.BOOKING,
    "app.tasks.maintenance.": names.MAINTENANCE,
    # Celery's own result expiry job runs beside the other periodic jobs.
    "celery.backend_cleanup": names.MAINTENANCE,
}
#: Tasks routed apart from their module's queue, by full name (checked first).
#: The calendar export is rate limited: a worker holds a waiting one unacked in
#: a prefetch slot, which on the booking queue would hold up payments.
OVERRIDES: dict[str, str] = {
    "app.tasks.booking_tasks.export_booking_calendars": names.MAINTENANCE,
    # Reminders go out by the thousand: in their own lane, a password reset never waits behind them.
    "app.tasks.email_tasks.send_booking_reminder": names.BULK,
}
#: Queue of Celery's other built-in tasks a producer may publish (``celery.chord_unlock``
#: for a chord); the same as ``task_default_queue``.
CELERY_TASKS_QUEUE = names.BOOKING
CELERY_PREFIX = "celery."


def queue_for(task_name: str) -> str | None:
    """Return the work queue of a task name, or None when no prefix matches."""
    if task_name in OVERRIDES:
        return OVERRIDES[task_name]
    for prefix, queue in PREFIXES.items():
        if task_name == prefix or task_name.startswith(prefix):
            return queue
    return None


def route_task(name: str, args: Any, kwargs: Any, options: Any, **_: Any) -> dict[str, Any] | None:
    """Celery router: pick the queue, exchange and routing key for a task name.

    The route says ``declare: []``: Celery would otherwise declare the queue, its
    exchange and binding before each publish (``send_task_message`` in
    ``celery/app/amqp.py`` declares ``[queue]`` when no ``declare`` is given),
    which needs configure rights a producer account does not have. Workers and
    ``magnetiq topology apply`` declare the topology (``routing.topology``). Celery
    merges the route under the caller's options, so an explicit ``declare`` wins.
    """
    queue = queue_for(name)
    if queue is None and name.startswith(CELERY_PREFIX):
        queue = CELERY_TASKS_QUEUE
    if queue is None:
        return None
    return {
        "queue": queue,
        "exchange": names.TASKS_EXCHANGE,
        "exchange_type": "topic",
        "routing_key": names.routing_key(queue, name.rsplit(".", 1)[-1]),
        "declare": [],
    }
