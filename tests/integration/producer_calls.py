"""The seed's Celery calls, run in a process of their own as whatever CELERY_BROKER_URL names.

``python -m tests.integration.producer_calls`` publishes each call once and prints
a JSON object: call name -> the ids of the results to wait for. The broker
account is the process's, as it would be in a producer service.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery, chain, chord, group
from kombu.utils.uuid import uuid

from app import producer
from app.celery_app import celery_app
from app.contracts import SEND_WELCOME_EMAIL
from app.tasks.email_tasks import send_welcome_email

#: Every welcome email the producer calls ask for (chain, group and chord tasks included).
RECIPIENTS = {
    f"{user}@example.com"
    for user in (
        "ana", "cd", "eta", "st", "chain1", "chain2", "group1", "group2",
        "chord1", "chord2", "chordbody", "enq", "enqcd", "enqeta", "many1", "many2", "grouped1", "grouped2",
    )
}  # fmt: skip
#: Seconds every delayed call waits (native delayed delivery counts whole seconds).
DELAY = 2


def welcome(user: str) -> Any:
    """An immutable welcome-email signature for ``<user>@example.com``."""
    return send_welcome_email.si(f"{user}@example.com", user.title())


def calls(later: datetime) -> dict[str, Callable[[], list[str]]]:
    """Each call of the seed's API (and the producer helpers): name -> publish, returning result ids.

    The ``eta`` calls ask for ``later``; the ``countdown`` ones for ``DELAY`` seconds.
    """
    return {
        "delay": lambda: [send_welcome_email.delay("ana@example.com", "Ana").id],
        "countdown": lambda: [send_welcome_email.apply_async(("cd@example.com", "Cd"), countdown=DELAY).id],
        "eta": lambda: [send_welcome_email.apply_async(("eta@example.com", "Eta"), eta=later).id],
        "send_task": lambda: [celery_app.send_task(SEND_WELCOME_EMAIL, ("st@example.com", "St")).id],
        "chain": lambda: [chain(welcome("chain1"), welcome("chain2")).apply_async().id],
        "group": lambda: [r.id for r in group(welcome("group1"), welcome("group2")).apply_async().results],
        "chord": lambda: [
            chord([welcome("chord1"), welcome("chord2")], welcome("chordbody")).apply_async().id
        ],
        "enqueue": lambda: [producer.enqueue_welcome_email("enq@example.com", "Enq").id],
        "enqueue_countdown": lambda: [
            producer.enqueue_welcome_email("enqcd@example.com", "Enqcd", countdown=DELAY).id
        ],
        "enqueue_eta": lambda: [producer.enqueue_welcome_email("enqeta@example.com", "Enqeta", eta=later).id],
        "enqueue_many": lambda: [r.id for r in producer.enqueue_many(SEND_WELCOME_EMAIL, many("many", 2))],
        "enqueue_many_group": lambda: [
            r.id for r in producer.enqueue_many(SEND_WELCOME_EMAIL, many("grouped", 2), group_id=uuid())
        ],
    }


def many(user: str, count: int) -> list[dict[str, str]]:
    """Welcome-email keyword arguments for ``<user>1@example.com`` .. ``<user><count>@example.com``."""
    return [{"user_email": f"{user}{i}@example.com", "user_name": user.title()} for i in range(1, count + 1)]


def assert_every_call_ran(published: dict[str, Any], sink: Any, app: Celery = celery_app) -> None:
    """Each call was taken, each task succeeded (a delayed one no earlier than asked), each email sent.

    Results are read through ``app`` (the fleet's, or one whose backend is where the workers store them).
    """
    assert {name: call["error"] for name, call in published.items() if "error" in call} == {}
    for name, call in published.items():
        for task_id in call["ids"]:
            result = app.AsyncResult(task_id)
            result.get(timeout=60)
            assert result.status == "SUCCESS", (name, result.status)
            if call["not_before"]:
                done = result.date_done if result.date_done.tzinfo else result.date_done.replace(tzinfo=UTC)
                assert done >= datetime.fromisoformat(call["not_before"]), name
    assert {message["To"] for message in sink.wait_for(len(RECIPIENTS))} == RECIPIENTS


def main() -> None:
    """Publish every call; print call -> result ids (and, if delayed, the earliest start), or its error."""
    published: dict[str, Any] = {}
    later = datetime.now(UTC) + timedelta(seconds=DELAY)
    for name, call in calls(later).items():
        not_before = None
        if "countdown" in name:
            not_before = datetime.now(UTC) + timedelta(seconds=DELAY)
        elif "eta" in name:
            not_before = later
        try:
            published[name] = {"ids": call(), "not_before": not_before and not_before.isoformat()}
        except Exception as exc:  # reported per call, so one refusal does not hide the others
            published[name] = {"error": f"{type(exc).__name__}: {exc}"}
    celery_app.pool.force_close_all()
    print(json.dumps(published))  # the test reads it


if __name__ == "__main__":
    main()
