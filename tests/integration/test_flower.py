"""Flower against the fleet: it sees the workers, turns task events on, and sees the tasks they run."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.tasks.booking_tasks import process_payment
from tests.support.environment import worker_env
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess, terminate


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@pytest.mark.slow
def test_flower_lists_workers_and_tasks(
    start_worker: Callable[..., WorkerProcess], database: Any, tmp_path: Path
) -> None:
    # given Flower started against the fleet's app and broker
    port = free_port()
    log = (tmp_path / "flower.log").open("wb")
    flower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.entry",
            "flower",
            "--address=127.0.0.1",
            f"--port={port}",
            "--persistent=False",
        ],
        cwd=ROOT,
        env=worker_env(FLOWER_UNAUTHENTICATED_API="true"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _reachable(f"{base}/healthcheck"), 30, "Flower to listen", interval=0.2)
        # when a booking worker starts (task events off, as by default)
        start_worker("booking")
        workers = wait_until(lambda: _workers(base), 30, "Flower to see the booking worker", interval=0.5)
        assert any(name.startswith("booking@") for name in workers)
        # then Flower's enable_events broadcast (every 5 s) turns the worker's events
        # on, and Flower sees a task that runs after that by its id, name and state
        seen: list[str] = []

        def a_task_seen() -> dict[str, Any] | None:
            for task_id in seen:
                task = _task(base, task_id)
                if task is not None:
                    return task
            with database.begin() as db:
                payment_id = db.exec_driver_sql(
                    "INSERT INTO payments (amount_cents) VALUES (500) RETURNING id"
                ).scalar_one()
            result = process_payment.delay(payment_id)
            assert result.get(timeout=30) == f"Payment {payment_id} processed"
            seen.append(result.id)
            return None

        task = wait_until(a_task_seen, 45, "Flower to see a task", interval=1)
        assert task["name"] == "app.tasks.booking_tasks.process_payment"
        assert task["state"] == "SUCCESS"
        assert task["uuid"] in seen
    finally:
        terminate(flower)
        log.close()


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _workers(base: str) -> list[str]:
    try:
        return [name for name in _get(f"{base}/api/workers?refresh=1") if "@" in name]
    except OSError:
        return []


def _task(base: str, task_id: str) -> dict[str, Any] | None:
    try:
        task = _get(f"{base}/api/task/info/{task_id}")
    except OSError:
        return None
    return task if task.get("state") == "SUCCESS" else None
