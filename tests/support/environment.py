"""The tests' own services: their URLs, the environment a test or worker runs with, and skip-or-fail.

Integration tests use their own RabbitMQ vhost and PostgreSQL database, named by
``TEST_CELERY_BROKER_URL`` and ``TEST_DATABASE_URL``, so they never touch the
fleet's own.
"""

from __future__ import annotations

import os

import pytest

from tests.support.payment_provider import shared_provider

#: The tests' own RabbitMQ vhost (created by `make services`) and database.
TEST_BROKER_URL = os.environ.get("TEST_CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/magnetiq_test")
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/magnetiq_test")
#: A Redis database of the tests' own, for the cases that run the fleet on a Redis broker (flushed).
TEST_REDIS_BROKER_URL = os.environ.get("TEST_REDIS_BROKER_URL", "redis://127.0.0.1:6379/12")


def use_test_services() -> None:
    """Point this process's fleet settings at the tests' vhost and database (before the app is imported)."""
    os.environ["CELERY_BROKER_URL"] = TEST_BROKER_URL
    os.environ["DATABASE_URL"] = TEST_DATABASE_URL
    os.environ.pop("CELERY_RESULT_BACKEND", None)
    os.environ["MAGNETIQ_ENV"] = "test"
    os.environ["METRICS_PORT"] = "0"


def unavailable(reason: str) -> None:
    """Skip the test because a service is missing; under ``CI`` fail instead, since CI runs every test."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI runs every integration test; start the service)")
    pytest.skip(reason)


def worker_env(**overrides: str) -> dict[str, str]:
    """The environment a worker process of the tests runs with."""
    env = dict(os.environ)
    env.update(
        {
            "CELERY_BROKER_URL": TEST_BROKER_URL,
            "DATABASE_URL": TEST_DATABASE_URL,
            "PAYMENT_PROVIDER_URL": shared_provider()[0],
        }
    )
    env.update(overrides)
    return env
