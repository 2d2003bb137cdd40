"""Render email templates (jinja2, autoescaped, sandboxed) into subject, text and HTML."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import PackageLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: Templates: ``<name>.subject.txt``, ``<name>.txt`` and ``<name>.html`` each
#: (files starting with ``_`` are shared pieces, never rendered on their own).
TEMPLATE_NAMES = (
    "welcome",
    "booking_confirmation",
    "booking_reminder",
    "booking_cancellation",
    "booking_expired",
    "password_reset",
)


@dataclass(frozen=True)
class RenderedEmail:
    """A rendered email's parts."""

    subject: str
    text: str
    html: str


class Renderer:
    """Renders the packaged templates; data is escaped in HTML and never evaluated."""

    def __init__(self) -> None:
        self._env = ImmutableSandboxedEnvironment(
            loader=PackageLoader("app.mail", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            # packaged templates never change under a running worker: no stat() per render
            auto_reload=False,
        )

    def render(self, template: str, /, **context: Any) -> RenderedEmail:
        """Render ``template`` with ``context``.

        Raises:
            KeyError: no such template.
        """
        if template not in TEMPLATE_NAMES:
            raise KeyError(f"unknown email template {template!r}")
        subject = self._env.get_template(f"{template}.subject.txt").render(**context)
        return RenderedEmail(
            subject=" ".join(subject.split()),
            text=self._env.get_template(f"{template}.txt").render(**context),
            html=self._env.get_template(f"{template}.html").render(**context),
        )
