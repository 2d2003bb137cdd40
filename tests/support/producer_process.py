"""Publish as a producer service does: a process of its own, connected to the broker it is given."""

from __future__ import annotations

import json
import os
from typing import Any

from tests.support.environment import TEST_DATABASE_URL
from tests.support.processes import run_python


def send_as_producer(task_name: str, kwargs: dict[str, Any], broker_url: str) -> str:
    """Publish one task by name with ``send_task`` from a new process on ``broker_url``; return its id."""
    code = (
        "import json, sys; from app.celery_app import celery_app; "
        f"print(celery_app.send_task({task_name!r}, kwargs=json.loads(sys.argv[1])).id)"
    )
    env = {**os.environ, "CELERY_BROKER_URL": broker_url, "DATABASE_URL": TEST_DATABASE_URL}
    return run_python("-c", code, json.dumps(kwargs), env=env).strip().splitlines()[-1]
