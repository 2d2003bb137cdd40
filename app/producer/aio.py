"""The producer API for ``async def`` code (FastAPI endpoints): the same guarantees, the loop never blocked.

Each helper is its synchronous twin from ``app.producer`` run on a thread pool
of its own: validation, ``mandatory`` routing and publisher confirms are the
same, and a slow or stalled broker holds a pool thread, never the event loop.
``wait_result`` waits for a task's result on the loop itself: one PostgreSQL
connection per event loop ``LISTEN``s for the ``NOTIFY`` the result backend
sends with a stored row someone waits for, with a read every ``interval`` as
a backstop (and polling alone where ``NOTIFY`` cannot reach this process, or
results are stored in Redis).

    from app.producer import aio

    @app.post("/register")
    async def register(user: User) -> dict[str, str]:
        result = await aio.enqueue_welcome_email(user.email, user.name)
        return {"task_id": result.id}

    @app.get("/tasks/{task_id}")
    async def task(task_id: str) -> dict[str, Any]:
        return {"result": await aio.wait_result(task_id, timeout=30)}
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import psycopg2
from celery import states
from celery.exceptions import TimeoutError
from sqlalchemy.engine import make_url

from app import producer
from app.celery_app import celery_app
from app.result_backend import CHANNEL, PostgresBackend

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger(__name__)

#: Threads publishing at once for this process (each waits on one broker confirm at a time).
PUBLISH_THREADS = 32
_executor = ThreadPoolExecutor(max_workers=PUBLISH_THREADS, thread_name_prefix="magnetiq-publish")


def _off_loop(helper: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """``helper`` as a coroutine function that runs it on the publish pool."""

    @functools.wraps(helper)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return await _run(helper, *args, **kwargs)

    return call


publish = _off_loop(producer.publish)
send = _off_loop(producer.send)
enqueue = _off_loop(producer.enqueue)
enqueue_many = _off_loop(producer.enqueue_many)
enqueue_welcome_email = _off_loop(producer.enqueue_welcome_email)
enqueue_booking_confirmation = _off_loop(producer.enqueue_booking_confirmation)
enqueue_booking_reminder = _off_loop(producer.enqueue_booking_reminder)
enqueue_booking_cancellation = _off_loop(producer.enqueue_booking_cancellation)
enqueue_booking_expired = _off_loop(producer.enqueue_booking_expired)
enqueue_password_reset = _off_loop(producer.enqueue_password_reset)
enqueue_process_payment = _off_loop(producer.enqueue_process_payment)
enqueue_process_booking = _off_loop(producer.enqueue_process_booking)
enqueue_cancel_booking = _off_loop(producer.enqueue_cancel_booking)
enqueue_import_bookings = _off_loop(producer.enqueue_import_bookings)
enqueue_cleanup_old_sessions = _off_loop(producer.enqueue_cleanup_old_sessions)


class _Listener:
    """This event loop's LISTEN connection (psycopg2 in asynchronous mode, read by the loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiter = uuid.uuid4().hex
        self.waits: dict[str, set[asyncio.Future[None]]] = {}
        self.connection: Any = None
        #: Waits woken because their result was announced.
        self.wakeups = 0

    async def start(self, url: str) -> None:
        args = make_url(url).translate_connect_args(username="user", database="dbname")
        self.connection = psycopg2.connect(**args, connect_timeout=5, async_=True)
        await self._ready()
        cursor = self.connection.cursor()
        cursor.execute(f"LISTEN {CHANNEL}")
        await self._ready()
        self.loop.add_reader(self.connection.fileno(), self._readable)

    async def _ready(self) -> None:
        """Drive the connection's current operation (connect, a query) to completion on the loop."""
        fd = self.connection.fileno()
        while (state := self.connection.poll()) != psycopg2.extensions.POLL_OK:
            done: asyncio.Future[None] = self.loop.create_future()
            watch = self.loop.add_reader if state == psycopg2.extensions.POLL_READ else self.loop.add_writer
            unwatch = self.loop.remove_reader if watch == self.loop.add_reader else self.loop.remove_writer
            watch(fd, done.set_result, None)
            try:
                await done
            finally:
                unwatch(fd)

    def _readable(self) -> None:
        try:
            self.connection.poll()
        except psycopg2.Error:
            self.close()
            return
        for note in self.connection.notifies:
            for future in self.waits.get(note.payload, ()):
                if not future.done():
                    future.set_result(None)
                    self.wakeups += 1
        self.connection.notifies.clear()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.connection.fileno())
        with contextlib.suppress(Exception):
            self.connection.close()
        _listeners.pop(self.loop, None)


#: Each event loop's listener (a loop that is gone takes its listener with it).
_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Listener] = weakref.WeakKeyDictionary()


async def _listener() -> _Listener | None:
    """This loop's listener, started on first use; None where NOTIFY cannot reach this process."""
    backend = celery_app.backend
    if not isinstance(backend, PostgresBackend):
        return None  # results in Redis (``app.redis_results``): read every ``interval``
    if backend.notify_works is None:
        await _run(backend.listener)  # the first wait in this process checks that NOTIFY reaches it
    if backend.notify_works is False:
        return None
    loop = asyncio.get_running_loop()
    current = _listeners.get(loop)
    if current is None:
        current = _Listener(loop)
        try:
            await current.start(backend.url)
        except psycopg2.Error as exc:
            log.warning("result waits poll: no LISTEN connection (%s)", exc)
            return None
        _listeners[loop] = current
    return current


async def wait_result(
    task_id: str, timeout: float | None = None, *, interval: float = 0.5, propagate: bool = True
) -> Any:
    """Wait for ``task_id``'s result without blocking the loop; return its value.

    Args:
        task_id: the task's id (``(await enqueue_...(...)).id``).
        timeout: seconds to wait at most (None: until it is ready).
        interval: seconds between backstop reads of the stored state.
        propagate: raise the task's exception if it failed (else return it).

    Raises:
        celery.exceptions.TimeoutError: ``timeout`` seconds passed first.
    """
    backend = celery_app.backend
    read = functools.partial(_run, backend.get_task_meta, task_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    meta = await read()
    listener = None if meta["status"] in states.READY_STATES else await _listener()
    future: asyncio.Future[None] | None = None
    if listener is not None:
        assert isinstance(backend, PostgresBackend)  # only it announces stored results
        await _run(backend.register_waiter, [task_id], listener.waiter)
    try:
        while meta["status"] not in states.READY_STATES:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"The operation timed out ({timeout})")
            nap = interval if remaining is None else min(interval, remaining)
            if listener is not None:
                future = asyncio.get_running_loop().create_future()
                listener.waits.setdefault(task_id, set()).add(future)
                meta = await read()  # registered and listening: a result stored from now on is announced
                if meta["status"] in states.READY_STATES:
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(future, nap)
                listener.waits[task_id].discard(future)
            else:
                await asyncio.sleep(nap)
            meta = await read()
    finally:
        if listener is not None:
            assert isinstance(backend, PostgresBackend)
            listener.waits.pop(task_id, None)
            await _run(backend.unregister_waiter, [task_id], listener.waiter)
    if propagate and meta["status"] in states.PROPAGATE_STATES:
        raise meta["result"]  # the task's exception, as the backend decoded it
    return meta["result"]


async def task_state(task_id: str) -> tuple[str, Any]:
    """A task's state and info now, read without blocking the loop (``PROGRESS``: ``{"done", "total"}``)."""
    meta = await _run(celery_app.backend.get_task_meta, task_id)
    return meta["status"], meta["result"]


async def _run(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    return await asyncio.get_running_loop().run_in_executor(
        _executor, functools.partial(function, *args, **kwargs)
    )
