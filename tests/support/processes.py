"""Processes a test started, read from ``/proc``: their tree, whether one lives, its peak memory."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support.paths import ROOT


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


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def peak_rss_kib(pid: int) -> dict[int, int]:
    """VmHWM (peak resident set, KiB) of ``pid`` and its descendants, by pid (processes gone are left out)."""
    peaks: dict[int, int] = {}
    for current in (pid, *descendants(pid)):
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[current] = int(line.split()[1])
    return peaks


def run_python(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60) -> str:
    """Run this interpreter with ``args`` in the project root; return its output (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
