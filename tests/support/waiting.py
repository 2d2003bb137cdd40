"""Waiting with a deadline: poll a predicate instead of sleeping a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class WaitTimeout(AssertionError, TimeoutError):
    """A wait ran past its deadline.

    An ``AssertionError``, so pytest reports it as the failed expectation it is,
    and a ``TimeoutError``, so code that may tolerate a slow wait (the fault
    harness counting what never settled) catches it by that name.
    """


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` every ``interval`` seconds until it returns something truthy; return that.

    Raises:
        WaitTimeout: ``timeout`` seconds passed and ``predicate`` never held.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
