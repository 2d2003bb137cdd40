"""Message signing (Celery's auth serializer) by configuration, on a real worker."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import trustme
from kombu import Connection
from sqlalchemy import text

from app import producer
from app.settings import Settings
from routing import names
from tests.support.broker import queue_depth
from tests.support.environment import worker_env
from tests.support.paths import ROOT
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess


@pytest.fixture(scope="module")
def signing_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """TASK_SIGNING_* for one signer whose certificate is the only one trusted (RSA, as auth needs)."""
    base = tmp_path_factory.mktemp("signing")
    signer = trustme.CA(key_type=trustme.KeyType.RSA).issue_cert(
        "magnetiq-signer", key_type=trustme.KeyType.RSA
    )
    (base / "store").mkdir()
    signer.private_key_pem.write_to_path(str(base / "signer.key"))
    signer.cert_chain_pems[0].write_to_path(str(base / "signer.pem"))
    signer.cert_chain_pems[0].write_to_path(str(base / "store" / "signer.pem"))
    return {
        "TASK_SIGNING_KEY": str(base / "signer.key"),
        "TASK_SIGNING_CERT": str(base / "signer.pem"),
        "TASK_SIGNING_CERT_STORE": str(base / "store"),
    }


@pytest.fixture(scope="module")
def signing_worker(start_worker: Callable[..., WorkerProcess], signing_env: dict[str, str]) -> WorkerProcess:
    return start_worker("booking", **signing_env)


def payment(database: Any) -> int:
    with database.begin() as db:
        return int(
            db.execute(text("INSERT INTO payments (amount_cents) VALUES (100) RETURNING id")).scalar_one()
        )


def status(database: Any, payment_id: int) -> str:
    with database.connect() as db:
        return str(
            db.execute(text("SELECT status FROM payments WHERE id = :i"), {"i": payment_id}).scalar_one()
        )


def test_a_signed_task_runs(
    signing_worker: WorkerProcess, signing_env: dict[str, str], database: Any
) -> None:
    payment_id = payment(database)
    script = f"from app.producer import enqueue_process_payment as e; print(e({payment_id}).get(timeout=30))"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=worker_env(**signing_env),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout.strip() == f"Payment {payment_id} processed", done.stderr
    assert status(database, payment_id) == "processed"


def test_an_unsigned_task_is_refused_to_the_dlq(
    signing_worker: WorkerProcess, broker: Connection, database: Any
) -> None:
    payment_id = payment(database)
    producer.enqueue_process_payment(payment_id)  # this process publishes plain JSON
    wait_until(lambda: queue_depth(broker, names.dlq(names.BOOKING))[0] == 1, 20, "booking.dlq depth 1")
    assert status(database, payment_id) == "pending"
    assert signing_worker.proc.poll() is None


def test_half_a_signing_configuration_is_an_error() -> None:
    with pytest.raises(ValueError, match="TASK_SIGNING_KEY, TASK_SIGNING_CERT, TASK_SIGNING_CERT_STORE"):
        Settings(task_signing_key="/run/secrets/key.pem")
