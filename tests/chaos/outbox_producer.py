"""A producer process for the outbox case: ``python -m tests.chaos.outbox_producer FIRST LAST KILL_AFTER``.

For each payment id from FIRST to LAST it writes the process-payment task to the
outbox in a transaction of its own; every tenth transaction rolls back, and the
process SIGKILLs itself right after committing KILL_AFTER, before anything
could be published.
"""

from __future__ import annotations

import os
import signal
import sys

from app import contracts, outbox
from app.db import engine_for
from app.settings import get_settings


class RolledBack(Exception):
    """Aborts a transaction on purpose."""


def main(first: int, last: int, kill_after: int) -> None:
    """Write the tasks; die at ``kill_after``."""
    engine = engine_for(get_settings().database_url)
    for payment_id in range(first, last + 1):
        try:
            with engine.begin() as db:
                outbox.add(db, contracts.PROCESS_PAYMENT, contracts.ProcessPaymentArgs, payment_id=payment_id)
                if payment_id % 10 == 0:
                    raise RolledBack
        except RolledBack:
            continue
        if payment_id == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:4]))
