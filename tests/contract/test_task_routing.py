"""Contract: registered tasks vs contracts.py names vs routes vs declared queues vs profiles."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from celery import Task

import app.tasks.booking_tasks
import app.tasks.email_tasks
import app.tasks.maintenance  # noqa: F401 - registers the task
from app import contracts
from app.celery_app import celery_app
from app.maintenance.schedule import SCHEDULE
from app.tasks.base import FleetTask
from routing.routes import route_task
from routing.topology import TASK_QUEUES
from tests.support.paths import ROOT
from workers.profiles import PROFILES

QUEUE_NAMES = {queue.name for queue in TASK_QUEUES}
#: Task name prefixes that are not the fleet's: Celery's own tasks, and the
#: ``shared_task`` helpers the pytest-celery plugin registers on every app in
#: the test process (a clean worker never has them; see the subprocess test).
FOREIGN_PREFIXES = ("celery.", "pytest_celery.")


def fleet_tasks() -> dict[str, Task]:
    """Every registered task that is neither Celery's own nor the test plugin's."""
    return {name: task for name, task in celery_app.tasks.items() if not name.startswith(FOREIGN_PREFIXES)}


FLEET_TASK_NAMES = sorted(fleet_tasks())


def test_registered_tasks_equal_the_contract_names() -> None:
    # given the task modules are imported
    # when the registered names are compared with the producer contract
    # then they are the same set, without duplicates in the contract
    assert set(FLEET_TASK_NAMES) == set(contracts.TASK_NAMES)
    assert len(contracts.TASK_NAMES) == len(set(contracts.TASK_NAMES))


def test_clean_worker_registry_equals_the_contract_names() -> None:
    # given a fresh interpreter that imports what a worker imports
    script = (
        "import app.tasks.email_tasks, app.tasks.booking_tasks, app.tasks.maintenance\n"
        "from app.celery_app import celery_app\n"
        "print('\\n'.join(sorted(celery_app.tasks)))\n"
    )

    # when it lists the registered tasks
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )

    # then the non-celery ones are exactly the contract names
    assert completed.returncode == 0, completed.stderr
    names = {name for name in completed.stdout.split() if not name.startswith("celery.")}
    assert names == set(contracts.TASK_NAMES)


@pytest.mark.parametrize("name", FLEET_TASK_NAMES)
def test_task_name_is_its_dotted_path(name: str) -> None:
    # given a registered task
    function = inspect.unwrap(fleet_tasks()[name].run)

    # when its name is compared with where its function lives
    # then the name is module path + function name
    assert name == f"{function.__module__}.{function.__name__}"


@pytest.mark.parametrize("name", FLEET_TASK_NAMES)
def test_task_routes_to_a_declared_queue(name: str) -> None:
    # given a registered task
    # when the router picks its destination
    route = route_task(name, (), {}, {})

    # then it is a declared work queue on the tasks exchange
    assert route is not None, f"{name} matches no route"
    assert route["queue"] in QUEUE_NAMES
    assert route["exchange"] == "magnetiq.tasks"


@pytest.mark.parametrize("name", FLEET_TASK_NAMES)
def test_routing_key_names_exactly_one_queue(name: str) -> None:
    # given a registered task's route
    route = route_task(name, (), {}, {})
    assert route is not None
    queue, key = route["queue"], route["routing_key"]

    # when its routing key is split into topic words
    words = key.split(".")

    # then it starts with its own queue and names no other queue
    # (native delayed delivery binds every queue as "#.<queue>.#")
    assert key.startswith(f"{queue}.")
    assert not (set(words) & (QUEUE_NAMES - {queue})), f"{key} also names another queue"
    assert words.count(queue) == 1


@pytest.mark.parametrize("name", [*FLEET_TASK_NAMES, "celery.backend_cleanup", "celery.chord_unlock"])
def test_celery_router_resolves_a_declared_queue(name: str) -> None:
    # given Celery's own router (task_routes + task_queues, missing queues forbidden)
    router = celery_app.amqp.router

    # when it routes the task name
    options = router.route({}, name, (), {})

    # then the destination is one of the declared queue objects
    assert options["queue"].name in QUEUE_NAMES
    assert options["queue"] in TASK_QUEUES


def test_beat_schedule_only_names_contract_tasks() -> None:
    # given the beat schedule
    # when its task names are compared with the contract
    # then each is a registered, routed task
    for job in SCHEDULE:
        assert job.task in contracts.TASK_NAMES
        assert route_task(job.task, (), {}, {}) is not None


@pytest.mark.parametrize("queue", sorted(QUEUE_NAMES))
def test_each_queue_has_exactly_one_profile(queue: str) -> None:
    # given a declared work queue
    # when the profiles consuming it are listed
    consumers = [name for name, profile in PROFILES.items() if queue in profile.queues]

    # then exactly one profile does
    assert len(consumers) == 1, f"queue {queue} is consumed by {consumers}"


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_each_profile_consumes_declared_queues(name: str) -> None:
    # given a worker profile
    queues = PROFILES[name].queues

    # when its queues are checked against the topology
    # then it consumes at least one queue and every one exists
    assert queues
    assert set(queues) <= QUEUE_NAMES


@pytest.mark.parametrize("name", FLEET_TASK_NAMES)
def test_task_arguments_model_matches_its_signature(name: str) -> None:
    # given a registered fleet task
    task = fleet_tasks()[name]
    assert isinstance(task, FleetTask)
    assert task.arguments is not None, f"{name} validates no arguments"

    # when its argument model is compared with the function signature
    parameters = list(inspect.signature(task.run).parameters)

    # then they name the same fields, in order
    assert parameters == list(task.arguments.model_fields)


@pytest.mark.parametrize("name", FLEET_TASK_NAMES)
def test_invalid_arguments_are_never_retried(name: str) -> None:
    # given a registered fleet task
    task = fleet_tasks()[name]

    # when its automatic retries are inspected
    retried = tuple(getattr(task, "autoretry_for", ()))

    # then a bad payload is not among them and retries are bounded
    assert not issubclass(contracts.InvalidTaskArguments, retried)
    assert task.max_retries is not None
    assert 0 < task.max_retries <= 10
