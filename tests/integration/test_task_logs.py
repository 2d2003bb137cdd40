"""Celery's line per task: off by default, on with ``LOG_EACH_TASK=true``; failures, retries logged always."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.canvas_tasks import INCLUDE, add, fail, retry_once
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess


@pytest.mark.parametrize("each_task", [False, True], ids=["default", "LOG_EACH_TASK=true"])
def test_a_worker_logs_each_task_only_when_asked_and_every_failure_and_retry_always(
    start_worker: Callable[..., WorkerProcess], each_task: bool
) -> None:
    # given a booking worker, as deployed or with LOG_EACH_TASK=true
    flag = str(each_task).lower()
    worker = start_worker("booking", *INCLUDE, "--hostname", f"logs-{flag}@%h", LOG_EACH_TASK=flag)

    # when it runs a task that succeeds, one that is retried once, and one that fails
    succeeded = add.delay(2, 3)
    assert succeeded.get(timeout=60) == 5
    retried = retry_once.delay("try again")
    assert retried.get(timeout=60) == 1
    failed = fail.delay("boom")
    wait_until(failed.ready, 60, "the failing task's result")
    wait_until(lambda: f"[{failed.id}] raised unexpected" in worker.log(), 30, "the failure's log line")

    # then the failure and the retry (once, with its reason) are logged either way,
    # the lines per task only when asked for
    worker.stop()  # the only worker on the queue: the next case's tasks go to its own
    log = worker.log()
    assert "ValueError('boom')" in log
    assert [
        line.split(" retry: ", 1)[1] for line in log.splitlines() if f"[{retried.id}] retry: " in line
    ] == ["Retry in 0s: ValueError('try again')"]
    assert (f"[{succeeded.id}] received" in log) is each_task
    assert (f"[{succeeded.id}] succeeded in" in log) is each_task
