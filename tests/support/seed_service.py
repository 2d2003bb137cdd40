"""The seed's producer as a FastAPI service: ``POST /register`` queues, ``GET /tasks/{id}`` awaits.

Run under uvicorn as its own process (``python -m uvicorn tests.support.seed_service:app``),
connected to whatever CELERY_BROKER_URL and DATABASE_URL name; the tests drive it over HTTP.
"""

from __future__ import annotations

from typing import Any

from celery.exceptions import TimeoutError
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from app.contracts import InvalidTaskArguments
from app.producer import aio

app = FastAPI(title="seed producer")


class Registration(BaseModel):
    """A new user, as the seed's endpoint takes it."""

    email: str
    name: str


@app.post("/register", status_code=202)
async def register(user: Registration) -> dict[str, str]:
    """Queue the welcome email; answer with its task id at once."""
    try:
        result = await aio.enqueue_welcome_email(user.email, user.name)
    except InvalidTaskArguments as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    return {"task_id": result.id}


@app.get("/tasks/{task_id}")
async def task(task_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """Await the task's result on the event loop (woken by its NOTIFY); after ``timeout``, its state now."""
    try:
        value = await aio.wait_result(task_id, timeout=timeout, propagate=False)
    except TimeoutError:
        status, info = await aio.task_state(task_id)  # PENDING, STARTED, or PROGRESS with done/total
        return {
            "task_id": task_id,
            "status": status,
            "result": None,
            "progress": info if status == "PROGRESS" else None,
        }
    status = "FAILURE" if isinstance(value, BaseException) else "SUCCESS"
    return {"task_id": task_id, "status": status, "result": repr(value) if status == "FAILURE" else value}
