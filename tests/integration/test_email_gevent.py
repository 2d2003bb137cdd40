"""The asyncio bridge under gevent, as in the email worker: sends overlap, the hub keeps running."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.support.environment import TEST_DATABASE_URL, worker_env
from tests.support.paths import ROOT
from tests.support.smtp_server import ScriptedSmtp


def test_hundred_greenlets_send_at_once_and_never_block_the_hub(database: Any) -> None:
    # given an SMTP server that holds every message two seconds
    server = ScriptedSmtp(delay=2.0).start()
    try:
        # when a gevent-patched process (psycogreen included) sends 100 emails from
        # 100 greenlets through the bridge, with the delivery ledger in PostgreSQL,
        # while five greenlets each run a half-second query
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.integration.gevent_mail_probe",
                str(server.port),
                TEST_DATABASE_URL,
                "--ledger",
            ],
            cwd=ROOT,
            env=worker_env(),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.splitlines()[-1])

    # then every send succeeded with no "another loop is running" error, all 100
    # were at the server at once (give or take a few on a loaded machine), over 100 pooled connections
    assert probe["sent"] == 100
    assert "loop" not in done.stderr
    assert server.handler.peak_in_flight >= 95, server.handler.peak_in_flight
    assert probe["opened"] == server.handler.connections == 100
    # the hub kept scheduling a ticker greenlet while the sends were in flight
    # (blocked, it would not tick at all during the 2 s the server holds them)
    assert probe["green_psycopg"] is True
    assert probe["ticks"] >= 10
    # and psycopg2 yielded to the hub: the five queries overlapped (each started
    # before any ended), which a blocking driver would have run one after another
    spans = probe["spans"]
    assert len(spans) == 5
    assert max(start for start, _ in spans) < min(end for _, end in spans)
