"""Contract: the reliability baseline of celery_config(settings)."""

from __future__ import annotations

from typing import Any

import pytest

from app.celery_app import celery_app, celery_config, create_celery
from app.redis_results import RedisResults
from app.result_backend import PostgresBackend
from app.settings import Settings
from routing.topology import TASK_QUEUES


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The Celery options built from default settings."""
    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    return celery_config(Settings())


def test_only_json_is_accepted_and_sent(config: dict[str, Any]) -> None:
    # given the Celery options
    # when the serialisation options are read
    # then JSON is the only format in and out
    assert config["accept_content"] == ["json"]
    assert config["task_serializer"] == "json"
    assert config["result_serializer"] == "json"
    assert config["result_accept_content"] == ["json"]


def test_messages_survive_crashes_and_failures(config: dict[str, Any]) -> None:
    # given the Celery options
    # when the acknowledgement options are read
    # then a message is acked only after its task ran and a failure dead-letters it
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["task_acks_on_failure"] is False


def test_publishing_is_confirmed_and_queues_are_never_invented(config: dict[str, Any]) -> None:
    # given the Celery options
    # when the publishing options are read
    # then the broker confirms each publish and unknown queues are an error
    assert config["broker_transport_options"]["confirm_publish"] is True
    assert config["task_create_missing_queues"] is False


def test_time_limits_are_ordered(config: dict[str, Any]) -> None:
    # given the Celery options
    # when the time limits are read
    # then the soft limit fires before the hard one
    assert 0 < config["task_soft_time_limit"] < config["task_time_limit"]


def test_default_queue_is_declared(config: dict[str, Any]) -> None:
    # given the Celery options
    # when the default queue is read
    # then it is one of the declared task queues, which are Celery's queues
    assert config["task_default_queue"] in {queue.name for queue in TASK_QUEUES}
    assert tuple(config["task_queues"]) == TASK_QUEUES


def test_producers_send_events_and_workers_wait_to_be_asked(config: dict[str, Any]) -> None:
    # given the default Celery options
    # when the event options are read
    # then producers send sent events; workers send task events once Flower
    # (or `celery control enable_events`) asks, not from the start
    assert config["task_send_sent_event"] is True
    assert config["worker_send_task_events"] is False


def test_worker_task_events_can_be_on_from_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # given WORKER_TASK_EVENTS=true
    monkeypatch.setenv("WORKER_TASK_EVENTS", "true")
    # when the Celery options are built
    config = celery_config(Settings())
    # then workers send task events from the start
    assert config["worker_send_task_events"] is True


def test_results_store_no_arguments_unless_asked(config: dict[str, Any]) -> None:
    # given the Celery options with the default settings
    # when the result options are read
    # then extended results (which would keep arguments, i.e. personal data) are off
    assert config["result_extended"] is False
    assert config["result_backend"].startswith("app.result_backend:PostgresBackend+postgresql+psycopg2://")


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("postgresql://app@127.0.0.1:5432/results", PostgresBackend),
        ("redis://127.0.0.1:6379/0", RedisResults),
        ("rediss://127.0.0.1:6380/0?ssl_cert_reqs=required", RedisResults),
    ],
)
def test_the_result_backend_setting_picks_the_fleets_backend(
    monkeypatch: pytest.MonkeyPatch, url: str, backend: type[Any]
) -> None:
    # given CELERY_RESULT_BACKEND in the environment, which Celery itself reads over its configuration
    monkeypatch.setenv("CELERY_RESULT_BACKEND", url)

    # when the app is built from the settings, then its backend is the fleet's for that URL
    app = create_celery(Settings())
    try:
        assert type(app.backend) is backend
    finally:
        app.close()
        celery_app.set_current()  # the new app made itself current


def test_a_result_backend_that_is_neither_postgresql_nor_redis_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"expected a postgresql:// URL, got scheme 'mongodb', or a redis://"
    ):
        Settings(celery_result_backend="mongodb://127.0.0.1/results")
