"""The ``magnetiq`` command line: a process of its own, on the tests' services."""

from __future__ import annotations

import subprocess
import sys

from tests.support.environment import worker_env
from tests.support.paths import ROOT


def magnetiq(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m workers.cli <args>`` with ``env`` over the workers' environment; return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        cwd=ROOT,
        env=worker_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
