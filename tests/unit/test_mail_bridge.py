"""Unit tests of app.mail.bridge: coroutines run on one native loop, called from any thread."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.mail.bridge import SWITCH_INTERVAL, AsyncioBridge

#: Seconds each concurrent call sleeps on the loop.
CALL_SLEEP = 0.2
#: Concurrent callers.
CALLERS = 50


class Boom(Exception):
    """Raised inside a coroutine to check propagation."""


@pytest.fixture(scope="module")
def bridge() -> AsyncioBridge:
    """One bridge (one loop thread) for the module, as in a worker process."""
    return AsyncioBridge()


def test_run_returns_the_coroutine_result(bridge: AsyncioBridge) -> None:
    # given a coroutine that yields once and returns a value
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    # when it is run through the bridge
    result = bridge.run(answer, timeout=5)

    # then its result comes back
    assert result == 42


def test_run_uses_one_loop_in_another_thread(bridge: AsyncioBridge) -> None:
    # given a coroutine reporting its loop and thread
    async def where() -> tuple[asyncio.AbstractEventLoop, int]:
        return asyncio.get_running_loop(), threading.get_ident()

    # when it runs twice
    first = bridge.run(where, timeout=5)
    second = bridge.run(where, timeout=5)

    # then both ran on the bridge's loop, off the caller's thread
    assert first[0] is second[0] is bridge.loop()
    assert first[1] == second[1] != threading.get_ident()


def test_run_propagates_the_coroutine_exception(bridge: AsyncioBridge) -> None:
    # given a coroutine that fails
    async def fail() -> None:
        await asyncio.sleep(0)
        raise Boom("from the loop")

    # when it is run
    # then the caller gets the same exception
    with pytest.raises(Boom, match="from the loop"):
        bridge.run(fail, timeout=5)


def test_run_times_out_and_cancels_a_slow_coroutine(bridge: AsyncioBridge) -> None:
    # given a coroutine that sleeps well past the timeout and notes its cancellation
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    # when it is run with a short timeout
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        bridge.run(slow, timeout=0.2)

    # then the caller was released near the timeout and the coroutine is cancelled
    assert time.monotonic() - started < 2
    assert cancelled.wait(timeout=2)


def test_loop_keeps_serving_after_a_timeout(bridge: AsyncioBridge) -> None:
    # given a call that timed out
    async def slow() -> None:
        await asyncio.sleep(30)

    with pytest.raises(TimeoutError):
        bridge.run(slow, timeout=0.1)

    # when another call is made
    async def quick() -> str:
        return "still here"

    # then it succeeds
    assert bridge.run(quick, timeout=5) == "still here"


def test_fifty_threads_share_the_loop_concurrently(bridge: AsyncioBridge) -> None:
    # given 50 callers, each running a coroutine that sleeps 0.2 s
    async def echo(value: int) -> int:
        await asyncio.sleep(CALL_SLEEP)
        return value * 2

    def call(value: int) -> int:
        return bridge.run(lambda: echo(value), timeout=10)

    # when they call from 50 threads at once
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        results = list(pool.map(call, range(CALLERS)))
    elapsed = time.monotonic() - started

    # then every result is right and the calls overlapped (liveness bound only:
    # serial execution would take 10 s)
    assert results == [value * 2 for value in range(CALLERS)]
    assert elapsed < 5


def test_exception_creating_the_coroutine_reaches_the_caller(bridge: AsyncioBridge) -> None:
    # given a factory that fails before it returns a coroutine
    def broken_factory() -> asyncio.Future[None]:
        raise Boom("factory failed")

    # when it is run
    # then the caller gets the factory's exception
    with pytest.raises(Boom):
        bridge.run(broken_factory, timeout=0.3)


def test_starting_the_loop_shortens_the_switch_interval(bridge: AsyncioBridge) -> None:
    # given a process whose bridge loop runs
    bridge.loop()

    # then threads hand the GIL over at least every SWITCH_INTERVAL
    assert sys.getswitchinterval() <= SWITCH_INTERVAL
