"""Email: rendering, SMTP delivery and the mail service the email tasks call."""

from __future__ import annotations

__all__: list[str] = []
