"""How messages are built and written: one email policy for the whole mail package."""

from __future__ import annotations

import io
from email.contentmanager import raw_data_manager
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.policy import Compat32
from typing import Any


class MailPolicy(Compat32):
    """The stdlib's compat32 header handling, with the modern content manager.

    The default policy parses every header into a token tree when it is set and
    refolds that tree when the message is written, a large share of the email
    worker's CPU (tests/bench/README.md, "Email: message building"). ``app.mail.service`` builds every header
    from checked values (an ASCII address, an RFC 2047 display name or subject),
    so the compat32 string handling is enough, and ``set_content``,
    ``add_attachment`` and ``get_body`` keep working through ``raw_data_manager``.
    """

    content_manager = raw_data_manager

    def fold_binary(self, name: str, value: Any) -> bytes:
        """Write a header; one that is short, ASCII and on one line goes out as it is.

        That is most headers of every message, and the stdlib would build an
        ``email.header.Header`` for each only to join it back unchanged.
        """
        if (
            isinstance(value, str)
            and value.isascii()
            and len(name) + 2 + len(value) <= (self.max_line_length or 78)
            and "\n" not in value
            and "\r" not in value
        ):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


#: The policy every message is built with (``\n`` inside; ``to_bytes`` writes CRLF).
#: Bodies are 7-bit (quoted-printable or base64 where needed), so a message never
#: depends on the server offering 8BITMIME.
POLICY = MailPolicy(cte_type="7bit")
_WIRE = POLICY.clone(linesep="\r\n")


def to_bytes(message: EmailMessage) -> bytes:
    """Serialise ``message`` for SMTP: ASCII, CRLF line ends (no ``Bcc`` is ever set to strip)."""
    with io.BytesIO() as out:
        BytesGenerator(out, policy=_WIRE).flatten(message)
        return out.getvalue()
