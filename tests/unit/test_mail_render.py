"""Unit tests of app.mail.render: templates render, data is escaped and never evaluated."""

from __future__ import annotations

import pytest
from jinja2 import UndefinedError
from markupsafe import escape

from app.mail.emails import SAMPLES
from app.mail.render import TEMPLATE_NAMES, Renderer


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    """One renderer for the module (it only holds a template environment)."""
    return Renderer()


def test_welcome_renders_subject_text_and_html(renderer: Renderer) -> None:
    # given a plain name
    # when the welcome email is rendered
    rendered = renderer.render("welcome", user_name="Ada")

    # then every part greets the user
    assert rendered.subject == "Welcome to Magnetiq, Ada!"
    assert "Hello Ada," in rendered.text
    assert "<h1>Hello Ada,</h1>" in rendered.html
    assert rendered.html.lstrip().lower().startswith("<!doctype html>")


def test_subject_is_one_line(renderer: Renderer) -> None:
    # given a name with unusual whitespace (the contract forbids control characters,
    # but the renderer must still never produce a multi-line subject)
    name = "Ada\u2028Bcc: x@evil.example\x85y"

    # when the welcome email is rendered
    subject = renderer.render("welcome", user_name=name).subject

    # then the subject is a single line
    assert subject.splitlines() == [subject]


def test_html_escapes_markup(renderer: Renderer) -> None:
    # given a name carrying a script
    hostile = "<script>alert(1)</script>"

    # when the welcome email is rendered
    rendered = renderer.render("welcome", user_name=hostile)

    # then HTML gets it escaped and text gets it verbatim
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert hostile in rendered.text
    assert hostile in rendered.subject


@pytest.mark.parametrize("hostile", ["{{7*7}}", "{% for x in range(7) %}7{% endfor %}", "{{ config }}"])
def test_template_syntax_in_data_is_never_evaluated(renderer: Renderer, hostile: str) -> None:
    # given a name that looks like template code
    # when the welcome email is rendered
    rendered = renderer.render("welcome", user_name=hostile)

    # then it appears literally and is not evaluated
    for part in (rendered.subject, rendered.text, rendered.html):
        assert "49" not in part
        assert "7777777" not in part
    assert hostile in rendered.text
    assert hostile in rendered.subject


def test_large_value_is_rendered_whole(renderer: Renderer) -> None:
    # given a 100 kB name
    big = "x" * 100_000

    # when the welcome email is rendered
    rendered = renderer.render("welcome", user_name=big)

    # then it is present in text and HTML
    assert big in rendered.text
    assert big in rendered.html


@pytest.mark.parametrize("name", ["goodbye", "../welcome", "welcome.html", ""])
def test_unknown_template_raises_key_error(renderer: Renderer, name: str) -> None:
    # given a name that is not a packaged template
    # when it is rendered
    # then KeyError says so
    with pytest.raises(KeyError, match="unknown email template"):
        renderer.render(name, user_name="Ada")


def test_missing_variable_is_an_error(renderer: Renderer) -> None:
    # given no user_name
    # when the welcome email is rendered
    # then rendering fails instead of greeting nobody
    with pytest.raises(UndefinedError):
        renderer.render("welcome")


def test_every_declared_template_renders(renderer: Renderer) -> None:
    # given the declared template names, each with its sample data
    assert set(TEMPLATE_NAMES) == set(SAMPLES)
    for name in TEMPLATE_NAMES:
        outgoing = SAMPLES[name]("Magnetiq <no-reply@magnetiq.local>")
        # when each is rendered
        rendered = renderer.render(name, **outgoing.context)
        # then each yields three non-empty parts that greet the user
        assert rendered.subject
        assert "Ada Lovelace" in rendered.text
        assert "Ada Lovelace" in rendered.html


#: Template data a hostile user could control: markup, template syntax, a huge string.
HOSTILE = ("<script>alert(1)</script>", "{{7*7}}", "{% raw %}x{% endraw %}{{ ''.__class__ }}", "y" * 50_000)


def _every_field(value: str) -> dict[str, dict[str, object]]:
    """Each template's context with every string field set to ``value``."""
    base = {
        "name": value,
        "booking_ref": value,
        "resource": value,
        "starts_at": value,
        "ends_at": value,
        "reason": value,
    }
    return {
        "welcome": {"user_name": value},
        "booking_confirmation": base,
        "booking_reminder": base,
        "booking_cancellation": base,
        "booking_expired": {k: v for k, v in base.items() if k not in ("ends_at", "reason")},
        "password_reset": {"name": value, "reset_url": value, "expires_minutes": value},
    }


@pytest.mark.parametrize("hostile", HOSTILE, ids=["script", "expression", "dunder", "long"])
@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_hostile_data_is_escaped_and_never_evaluated_in_every_template(
    renderer: Renderer, template: str, hostile: str
) -> None:
    # given every field of a template set to hostile data
    context = _every_field(hostile)[template]

    # when it is rendered
    rendered = renderer.render(template, **context)

    # then HTML carries it escaped, text verbatim, and nothing was evaluated
    assert escape(hostile) in rendered.html
    assert "<script>" not in rendered.html
    assert hostile in rendered.text
    for part in (rendered.subject, rendered.text, rendered.html):
        assert "49" not in part
        assert "<class" not in part and "&lt;class" not in part
