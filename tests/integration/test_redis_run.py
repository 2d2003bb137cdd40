"""`make run` on the seed's two Redis URLs: the whole fleet comes up, a seed call runs, Ctrl-C ends it all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from routing import names
from tests.support.environment import TEST_REDIS_BROKER_URL, worker_env
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.processes import descendants, pid_alive
from tests.support.waiting import wait_until

#: A producer service's seed call, in a process of its own on the seed's two URLs.
SEED_CALL = """
from app.tasks.email_tasks import send_welcome_email
result = send_welcome_email.delay("grace@example.com", "Grace")
value = result.get(timeout=30)
print(result.status, value is not None)
"""


@pytest.mark.slow
def test_run_on_the_seeds_redis_urls_brings_up_the_fleet_and_stops_it_cleanly(
    redis_db: redis.Redis, database: Any, tmp_path: Path
) -> None:
    # given `magnetiq run` with the seed's broker and result backend URLs (Redis both) and no SMTP_HOST
    seed_urls = {"CELERY_BROKER_URL": TEST_REDIS_BROKER_URL, "CELERY_RESULT_BACKEND": TEST_REDIS_BROKER_URL}
    health, mail_dir = tmp_path / "health", tmp_path / "mail"
    env = worker_env(**seed_urls, SMTP_PORT=str(free_port()), HEALTH_DIR=str(health))
    env.pop("SMTP_HOST", None)
    log = (tmp_path / "run.log").open("wb")
    runner = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "run", "--mail-dir", str(mail_dir)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # then a worker of every profile becomes ready (consuming its queue on Redis)
        for queue in names.WORK_QUEUES:
            wait_until(lambda q=queue: (health / f"{q}.ready").exists(), 90, f"the {queue} worker", 0.25)
        # and a producer's seed call on the same URLs succeeds, its result read from Redis
        done = subprocess.run(
            [sys.executable, "-c", SEED_CALL], cwd=ROOT, env={**os.environ, **seed_urls},
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert done.stdout.split() == ["SUCCESS", "True"], done.stdout + done.stderr
        # and its email lands in the run's mail directory
        mail = wait_until(lambda: list((mail_dir / "new").glob("*")), 15, "a mail file")
        assert "To: grace@example.com" in mail[0].read_text()
        children = set(descendants(runner.pid))
    finally:
        # when it gets Ctrl-C
        runner.send_signal(signal.SIGINT)
        code = runner.wait(60)
        log.close()
    # then everything it started is gone
    leftover = [pid for pid in children if pid_alive(pid)]
    assert leftover == [], (tmp_path / "run.log").read_text()[-3000:]
    assert code in (0, 130), (tmp_path / "run.log").read_text()[-3000:]
