"""A real client: the seed's FastAPI endpoints under uvicorn, over HTTP, to the SMTP sink."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery.result import AsyncResult

from app.celery_app import celery_app
from tests.support.canvas_tasks import INCLUDE, steps
from tests.support.cli import magnetiq
from tests.support.environment import worker_env
from tests.support.paths import ROOT
from tests.support.ports import free_port, port_open
from tests.support.smtp_server import SmtpSink
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess, terminate


@pytest.fixture(scope="module")
def email_worker(start_worker: Callable[..., WorkerProcess], smtp_sink: SmtpSink) -> WorkerProcess:
    return start_worker("email", SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_sink.port))


@pytest.fixture(scope="module")
def service(database: Any) -> Iterator[str]:
    """The seed service under uvicorn, in its own process; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.support.seed_service:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=worker_env(),
    )
    try:
        wait_until(lambda: port_open(port), 60, "uvicorn to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        terminate(process)


def test_register_queues_the_welcome_email_and_the_task_endpoint_awaits_it(
    email_worker: WorkerProcess, service: str, sink: SmtpSink
) -> None:
    with httpx.Client(base_url=service, timeout=60) as client:
        # when a user registers through the seed's endpoint
        accepted = client.post("/register", json={"email": "ada@example.com", "name": "Ada"})
        assert accepted.status_code == 202
        task_id = accepted.json()["task_id"]

        # then the task endpoint returns the task's result once the worker stored it
        done = client.get(f"/tasks/{task_id}").json()
    assert done["status"] == "SUCCESS"
    assert done["result"].startswith("Welcome email sent <")
    # and the email reached the SMTP server
    (mail,) = sink.wait_for(1)
    assert (mail["To"], mail["Subject"]) == ("ada@example.com", "Welcome to Magnetiq, Ada!")


def test_a_bad_address_is_refused_in_the_request(service: str) -> None:
    with httpx.Client(base_url=service, timeout=30) as client:
        refused = client.post("/register", json={"email": "not-an-address", "name": "Mallory"})
    assert refused.status_code == 422
    assert "user_email" in refused.json()["detail"]


def test_the_task_endpoint_and_the_command_line_show_a_long_task_s_progress(
    start_worker: Callable[..., WorkerProcess], service: str, tmp_path: Path
) -> None:
    # given a long task that reports progress after each of three steps, released one by one
    start_worker("booking", *INCLUDE, "--hostname", "progress@%h")
    go = tmp_path / "go"
    running = steps.delay(str(go), 3)

    with httpx.Client(base_url=service, timeout=60) as client:
        for done in (1, 2):
            # when a step is taken
            go.write_text("go\n" * done)

            # then the result's info, the task endpoint and the command line show how far it got
            progress = {"done": done, "total": 3}
            wait_until(
                lambda p=progress: AsyncResult(running.id, app=celery_app).info == p, 30, f"step {done}"
            )
            assert AsyncResult(running.id, app=celery_app).state == "PROGRESS"
            shown = client.get(f"/tasks/{running.id}", params={"timeout": 0}).json()
            assert shown == {
                "task_id": running.id,
                "status": "PROGRESS",
                "result": None,
                "progress": progress,
            }
        cli = magnetiq("task", "show", running.id)
        assert "state:     PROGRESS" in cli.stdout
        assert "progress:  2/3 (67 %)" in cli.stdout

        # and once the last step is taken the endpoint returns the result
        go.write_text("go\n" * 3)
        assert client.get(f"/tasks/{running.id}").json() == {
            "task_id": running.id,
            "status": "SUCCESS",
            "result": 3,
        }
