"""Render email templates (jinja2, autoescaped, sandboxed) into subject, text and HTML."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import PackageLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: Templates: ``<name>.subject.txt``, ``<name>.txt`` and ``<name>.html`` each.
TEMPLATE_NAMES = ("welcome",)


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
        )

    def render(self, name: str, **context: Any) -> RenderedEmail:
        """Render template ``name`` with ``context``.

        Raises:
            KeyError: no such template.
        """
        if name not in TEMPLATE_NAMES:
            raise KeyError(f"unknown email template {name!r}")
        subject = self._env.get_template(f"{name}.subject.txt").render(**context)
        return RenderedEmail(
            subject=" ".join(subject.split()),
            text=self._env.get_template(f"{name}.txt").render(**context),
            html=self._env.get_template(f"{name}.html").render(**context),
        )
