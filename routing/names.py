"""Exchange, queue and routing-key names: the fixed vocabulary of the broker."""

from __future__ import annotations

#: Topic exchange every task is published to.
TASKS_EXCHANGE = "magnetiq.tasks"
#: Topic exchange quorum queues dead-letter into.
DLX_EXCHANGE = "magnetiq.dlx"
#: Topic exchange of Celery's monitoring events (Celery's ``event_exchange`` default):
#: producers publish ``task-sent`` there without declaring it.
EVENTS_EXCHANGE = "celeryev"
#: The exchange native delayed delivery publishes a delayed task to (kombu's
#: ``celery_delayed_<level>`` with the highest level, 27: delays of up to 2**28 - 1 s).
DELAYED_EXCHANGE = "celery_delayed_27"
#: Longest delay native delayed delivery expresses, in whole seconds (28 bits).
MAX_DELAY_SECONDS = 2**28 - 1

#: Latency-sensitive, I/O-bound mail work: transactional email (gevent pool).
EMAIL = "email"
#: Bulk email (booking reminders, sent in fan-outs of thousands): a lane of its own,
#: with its own workers, consumer and prefetch, so transactional email never waits behind it.
BULK = "bulk"
#: Money and calendar work (prefork pool).
BOOKING = "booking"
#: Periodic and housekeeping work (prefork pool, one process).
MAINTENANCE = "maintenance"

#: Every work queue, in the order ops read them.
WORK_QUEUES = (EMAIL, BULK, BOOKING, MAINTENANCE)


def dlq(queue: str) -> str:
    """Return the dead-letter queue name of a work queue (``email`` -> ``email.dlq``)."""
    return f"{queue}.dlq"


def binding_key(queue: str) -> str:
    """Return the topic binding of a work queue (``email`` -> ``email.#``)."""
    return f"{queue}.#"


def routing_key(queue: str, task_short_name: str) -> str:
    """Return the routing key a task is published with (``email.send_welcome_email``).

    The short name is the task function's name, which has no dots, so the key
    contains exactly one queue word: native delayed delivery binds each queue as
    ``#.<queue>.#`` and a second queue word would copy the message there too.
    """
    if "." in task_short_name:
        raise ValueError(f"task short name {task_short_name!r} must not contain dots")
    return f"{queue}.{task_short_name}"
