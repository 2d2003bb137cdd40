"""Template previews: render a template with sample data into files a person can open."""

from __future__ import annotations

from pathlib import Path

from app.mail.emails import SAMPLES
from app.mail.render import Renderer
from app.mail.service import compose


def write_preview(template: str, out_dir: Path, mail_from: str) -> list[Path]:
    """Write ``<template>.eml`` (the whole message), ``.html`` and ``.txt`` into ``out_dir``.

    Raises:
        KeyError: no such template.
    """
    if template not in SAMPLES:
        raise KeyError(f"unknown email template {template!r}; known: {', '.join(SAMPLES)}")
    message = compose(Renderer(), mail_from, SAMPLES[template](mail_from))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {
        out_dir / f"{template}.eml": message.as_bytes(),
        out_dir / f"{template}.html": message.get_body(("html",)).get_content().encode(),  # type: ignore[union-attr]
        out_dir / f"{template}.txt": message.get_body(("plain",)).get_content().encode(),  # type: ignore[union-attr]
    }
    for path, data in written.items():
        path.write_bytes(data)
    return list(written)
