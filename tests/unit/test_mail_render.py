"""Unit tests of app.mail.render: templates render, data is escaped and never evaluated."""

from __future__ import annotations

import pytest
from jinja2 import UndefinedError

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
    # given the declared template names
    # when each is rendered
    # then each yields three non-empty parts
    for name in TEMPLATE_NAMES:
        rendered = renderer.render(name, user_name="Ada")
        assert rendered.subject
        assert rendered.text
        assert rendered.html
