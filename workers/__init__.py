"""Worker side of the fleet: profiles, entry points, per-process setup."""

from __future__ import annotations

from workers.profiles import PROFILES, WorkerProfile

__all__ = ["PROFILES", "WorkerProfile"]
