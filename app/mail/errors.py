"""How a send can fail, importable without the SMTP client, the gevent bridge or the templates.

Every worker imports the email tasks (their names are registered in each),
and the tasks need these classes to decide on retries; only the email worker
sends mail. Keeping them here keeps aiosmtplib, gevent and jinja2 out of
the booking and maintenance processes (about 6 MiB each).
"""

from __future__ import annotations


class SmtpTransientError(Exception):
    """The server or the network failed in a way a later attempt may not (4xx, timeouts)."""


class SmtpPermanentError(Exception):
    """The server refused the message for good (5xx): retrying cannot help."""


class DeliveryBusy(Exception):
    """Another attempt is sending this email right now: try again after its lease."""

    def __init__(self, message: str, retry_in: float) -> None:
        super().__init__(message)
        #: Seconds until the other attempt's lease runs out.
        self.retry_in = retry_in
