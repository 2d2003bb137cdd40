"""Test settings: point the fleet at the tests' own vhost and database before any import."""

from __future__ import annotations

import os

#: The tests' own RabbitMQ vhost (created by `make services`) and database.
TEST_BROKER_URL = os.environ.get("TEST_CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/magnetiq_test")
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/magnetiq_test")

os.environ["CELERY_BROKER_URL"] = TEST_BROKER_URL
os.environ["DATABASE_URL"] = TEST_DATABASE_URL
os.environ.pop("CELERY_RESULT_BACKEND", None)
os.environ["MAGNETIQ_ENV"] = "test"
os.environ["METRICS_PORT"] = "0"

# pytest-celery 1.x registers Docker-based fixtures under the classic names;
# no Docker engine runs here, so take back Celery's in-process ones.
from celery.contrib.pytest import celery_worker  # noqa: E402, F401
