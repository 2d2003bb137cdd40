"""The process tree under a pid, from ``/proc``: to stop, kill and measure what a test started."""

from __future__ import annotations

from pathlib import Path


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:  # the task ended while we looked
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid``, children first."""
    result: list[int] = []
    pending = [pid]
    while pending:
        kids = children(pending.pop())
        result += kids
        pending += kids
    return result
