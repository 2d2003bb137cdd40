"""Unit tests of workers.timers: cancelled time-limit timers leave the event loop's heap."""

from __future__ import annotations

from time import monotonic

from kombu.asynchronous import Hub
from kombu.asynchronous.timer import Timer

from workers.timers import sweep


def test_a_sweep_drops_the_cancelled_timers_and_the_live_ones_still_fire_in_order() -> None:
    # given a hub whose timer holds 1,000 per-task limits, armed and cancelled as the prefork
    # pool does (hub.call_later, then tref.cancel() when the task ends), 3 of them still running
    fired: list[int] = []
    hub = Hub(Timer())
    trefs = [hub.call_later(120 - i * 0.01, fired.append, i) for i in range(1000)]
    running = {7, 500, 998}
    for i, tref in enumerate(trefs):
        if i not in running:
            tref.cancel()

    # when the heap is swept
    dropped = sweep(hub.timer)

    # then only the running tasks' limits are left, and they still fire, earliest first
    assert dropped == 997
    assert len(hub.timer) == 3
    # (the timer's own scheduler, its clock moved past the limits)
    scheduler = hub.timer.__iter__(nowfun=lambda: monotonic() + 200)  # type: ignore[call-arg]  # the stubs omit it
    for _delay, entry in scheduler:
        if entry is None:
            break
        entry()
    assert fired == [998, 500, 7]


def test_a_sweep_of_a_heap_with_nothing_cancelled_leaves_it_as_it_was() -> None:
    # given a timer with live entries only
    timer = Timer()
    for delay in (3, 1, 2):
        timer.call_after(delay, print)
    before = list(timer._queue)

    # when it is swept, then nothing goes and the heap is the same list, in the same order
    assert sweep(timer) == 0
    assert timer._queue == before
