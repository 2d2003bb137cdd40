"""Run asyncio coroutines (aiosmtplib) from gevent greenlets or plain threads.

The email worker runs on gevent, aiosmtplib on asyncio. Calling ``asyncio.run``
from several greenlets fails ("cannot be called from a running event loop"),
so each process keeps one asyncio loop in a truly native thread and callers
hand it coroutines:

* the thread is started with the unpatched ``_thread.start_new_thread`` and the
  loop uses the unpatched epoll selector, so gevent never sees it;
* a caller queues its work for the loop and waits on a gevent event (greenlets)
  or a real lock (threads), so the hub never blocks;
* wake-ups are batched both ways: the loop is poked (``call_soon_threadsafe``,
  a write to its self-pipe) only when its inbox was empty, and finished calls
  are handed back to a greenlet's hub through one async watcher per hub, whose
  pending send coalesces; each hop otherwise cost a syscall and a GIL handover;
* the loop's executor and resolver use native threads and the C resolver,
  because gevent's would deadlock inside the loop thread.
"""

from __future__ import annotations

import _socket
import asyncio
import os
import sys
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Seconds a thread may hold the GIL before it is asked to hand it over (Python's
#: default is 0.005). The loop thread and the greenlets' thread pass work back and
#: forth many times per email; at 0.5 ms the waits for the GIL shrink (its effect
#: on the email rows: tests/bench/README.md, "Email: the bridge").
SWITCH_INTERVAL = 0.0005


def _original(module: str, name: str) -> Any:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return getattr(__import__(module), name)
    return monkey.get_original(module, name)


def _gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover
        return False
    return bool(monkey.is_module_patched("threading"))


class _NativeThreadLoop(asyncio.SelectorEventLoop):
    """An event loop whose blocking helpers run in native threads."""

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:  # type: ignore[override]
        future: asyncio.Future[T] = self.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if future.cancelled():
                return
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

        def work() -> None:
            try:
                result = func(*args)
            except BaseException as error:
                self.call_soon_threadsafe(settle, None, error)
            else:
                self.call_soon_threadsafe(settle, result, None)

        _original("_thread", "start_new_thread")(work, ())
        return future

    async def getaddrinfo(
        self, host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        return await self.run_in_executor(None, _socket.getaddrinfo, host, port, family, type, proto, flags)


class AsyncioBridge:
    """One asyncio loop per process in a native thread; ``run`` blocks only its caller."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0
        self._lock = _original("threading", "Lock")()
        #: Calls queued for the loop, and whether the loop was poked to drain them.
        self._inbox: deque[Callable[[], None]] = deque()
        self._poked = False

    def loop(self) -> asyncio.AbstractEventLoop:
        """Return this process's loop, starting its thread on first use."""
        if self._loop is not None and self._pid == os.getpid():
            return self._loop
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                selector = _original("selectors", "DefaultSelector")()
                loop = _NativeThreadLoop(selector)
                sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
                _original("_thread", "start_new_thread")(self._serve, (loop,))
                self._inbox.clear()
                self._poked = False
                self._loop, self._pid = loop, os.getpid()
        return self._loop

    def _submit(self, loop: asyncio.AbstractEventLoop, call: Callable[[], None]) -> None:
        """Queue ``call`` for the loop; poke the loop only if it is not about to drain already."""
        self._inbox.append(call)
        if not self._poked:
            self._poked = True
            loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        # Cleared before draining: a call queued from now on pokes the loop again.
        self._poked = False
        inbox = self._inbox
        while inbox:
            call = inbox.popleft()
            try:
                call()
            except BaseException:
                if inbox:  # the rest still runs, in a drain of its own
                    self._poked = True
                    asyncio.get_running_loop().call_soon(self._drain)
                raise

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def run(self, make_coroutine: Callable[[], Awaitable[T]], timeout: float) -> T:
        """Run ``make_coroutine()`` on the loop and return its result.

        Raises:
            TimeoutError: the coroutine did not finish within ``timeout``; it is cancelled.
            Exception: whatever the coroutine raised.
        """
        loop = self.loop()
        wait, notify = _waiter()
        state: dict[str, Any] = {}

        def start() -> None:
            if state.get("abandoned"):  # the caller gave up before the loop got here
                return
            try:
                task: asyncio.Task[T] = loop.create_task(make_coroutine())  # type: ignore[arg-type]
            except BaseException as error:  # handed back to the caller
                state["error"] = error
                notify()
                return
            state["task"] = task
            task.add_done_callback(lambda _: notify())

        self._submit(loop, start)
        finished = wait(timeout)
        if "error" in state:
            raise state["error"]
        task = state.get("task")
        if not finished or task is None or not task.done():
            state["abandoned"] = True
            if task is not None:
                loop.call_soon_threadsafe(task.cancel)
            raise TimeoutError(f"asyncio call did not finish within {timeout:g}s")
        return task.result()  # type: ignore[no-any-return]


class _HubNotifier:
    """Sets gevent events of one hub from the loop thread, many per wake-up of that hub."""

    def __init__(self, hub: Any) -> None:
        self._ready: deque[Callable[[], None]] = deque()
        # ref=False: the watcher alone does not keep the hub's loop running.
        self._watcher = hub.loop.async_(ref=False)
        self._watcher.start(self._wake)

    def notify(self, set_event: Callable[[], None]) -> None:
        """Have the hub call ``set_event`` (safe from any thread); a pending wake-up is shared."""
        self._ready.append(set_event)
        self._watcher.send()

    def _wake(self) -> None:
        ready = self._ready
        while ready:
            ready.popleft()()


#: One notifier per gevent hub (in practice, the worker's one hub).
_notifiers: weakref.WeakKeyDictionary[Any, tuple[int, _HubNotifier]] = weakref.WeakKeyDictionary()


def _waiter() -> tuple[Callable[[float], bool], Callable[[], None]]:
    """Return (wait, notify): notify is safe to call from the loop thread."""
    if _gevent_patched():
        import gevent
        from gevent.event import Event

        event = Event()
        hub = gevent.get_hub()
        owner = _notifiers.get(hub)
        if owner is None or owner[0] != os.getpid():  # a forked child's hub needs its own watcher
            owner = _notifiers[hub] = (os.getpid(), _HubNotifier(hub))
        notifier = owner[1]
        return event.wait, lambda: notifier.notify(event.set)
    real = threading.Event()
    return real.wait, real.set


#: The process-wide bridge the SMTP adapter uses.
BRIDGE = AsyncioBridge()
