"""RabbitMQ routing for the fleet: names, kombu declarations and task routes."""

from __future__ import annotations

from routing import names
from routing.routes import route_task
from routing.topology import (
    DEAD_LETTER_QUEUES,
    DLX,
    TASK_QUEUES,
    TASKS,
    declare_topology,
)

__all__ = [
    "DEAD_LETTER_QUEUES",
    "DLX",
    "TASKS",
    "TASK_QUEUES",
    "declare_topology",
    "names",
    "route_task",
]
