"""Helpers shared by the test packages: ports, waiting, processes, servers, broker and test services.

Fixtures live in ``conftest.py`` files; everything a test module or a fixture
imports lives here, each module one concept.
"""

from __future__ import annotations

__all__: list[str] = []
