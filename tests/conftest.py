"""Test settings: point the fleet at the tests' own vhost and database before any import."""

from __future__ import annotations

from tests.support.environment import use_test_services

use_test_services()

# pytest-celery 1.x registers Docker-based fixtures under the classic names;
# no Docker engine runs here, so take back Celery's in-process ones.
from celery.contrib.pytest import celery_worker  # noqa: E402, F401
