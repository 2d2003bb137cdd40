"""Where the project sits on disk: the root every test process starts from."""

from __future__ import annotations

from pathlib import Path

#: The project root (holds ``app/``, ``workers/``, ``deploy/``): the cwd of every process a test starts.
ROOT = Path(__file__).resolve().parents[2]
