"""An event loop publishing one task while its broker is frozen: how long the loop itself ever stalled.

``python -m tests.integration.async_stall_probe`` (connected to whatever
CELERY_BROKER_URL names) ticks every 10 ms on the loop while it awaits one
``aio.enqueue_welcome_email``, then prints a JSON object: the publish's
duration, the longest gap between ticks, the ticks counted and the task id.
"""

from __future__ import annotations

import asyncio
import json
import time

from app.celery_app import celery_app
from app.producer import aio


async def main() -> dict[str, float | int | str]:
    """Publish once with a ticker running; report the longest gap the loop saw."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    result = await aio.enqueue_welcome_email("stall@example.com", "Stall")
    publish = time.monotonic() - started
    done.set()
    await ticker
    return {"publish_seconds": publish, "longest_gap": max(gaps), "ticks": len(gaps), "task_id": result.id}


if __name__ == "__main__":
    report = asyncio.run(main())
    celery_app.pool.force_close_all()
    print(json.dumps(report))  # the test reads it
