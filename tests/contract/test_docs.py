"""Contract: the documents say what the code does (links, settings, make targets, CLI commands)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from app.settings import Settings
from tests.support.paths import ROOT
from workers.cli import main as magnetiq

#: Every document a reader is sent to from the README.
DOCUMENTS = sorted(
    path
    for path in ROOT.glob("**/README.md")
    if not {".venv", "node_modules", ".git"} & set(path.relative_to(ROOT).parts)
)
README = ROOT / "README.md"
#: The README is the manual; runbooks and results live beside what they describe.
README_MAX_LINES = 400
LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def slug(heading: str) -> str:
    """Return the anchor a Markdown renderer gives a heading (GitHub's rule)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def prose(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def shown_commands(path: Path, program: str) -> list[str]:
    """Return what follows ``program`` in inline code and at the start of code-block lines."""
    text = prose(path)
    words = r"((?:[a-z][a-z-]+ ?){1,2})"
    inline = re.findall(rf"`{program} {words}", text)
    blocks = "\n".join(FENCE.findall(text))
    return inline + re.findall(rf"^(?:\.venv/bin/)?{program} {words}", blocks, re.M)


def test_the_documents_are_found() -> None:
    # given the repository, then the manual and the documents beside what they describe exist
    names = {str(path.relative_to(ROOT)) for path in DOCUMENTS}
    assert {"README.md", "deploy/README.md", "tests/chaos/README.md", "tests/bench/README.md"} <= names


def test_the_readme_is_a_manual_not_a_logbook() -> None:
    # given the README, then it stays short enough to read as a manual
    assert len(prose(README).splitlines()) <= README_MAX_LINES


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_its_heading(document: Path) -> None:
    # given a document's relative links
    broken = []
    for target, anchor in LINK.findall(FENCE.sub("", prose(document))):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        # when each is resolved against the document's folder
        path = (document.parent / target).resolve() if target else document
        # then the file exists, and the heading it names too
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}#{anchor}")
    assert broken == []


def documented_settings() -> set[str]:
    text = prose(README)
    table = text[text.index("<!-- settings:start -->") : text.index("<!-- settings:end -->")]
    names: set[str] = set()
    for row in table.splitlines()[2:]:
        first_cell = row.split("|")[1] if row.startswith("|") else ""
        names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    return names


def test_the_configuration_table_lists_exactly_the_settings_the_code_reads() -> None:
    # given the README's configuration table and the Settings fields
    read = {name.upper() for name in Settings.model_fields}
    # then every variable the code reads is documented, and nothing else is
    assert documented_settings() == read


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    found = {prefix} if prefix else set()
    for name, command in group.commands.items():
        found.add((*prefix, name))
        if isinstance(command, click.Group):
            found |= commands(command, (*prefix, name))
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_magnetiq_command_the_documents_show_exists(document: Path) -> None:
    # given the commands of the `magnetiq` CLI
    known = commands(magnetiq)
    # when every `magnetiq <group> <command>` a document shows is read
    shown = shown_commands(document, "magnetiq")
    missing = []
    for words in shown:
        parts = tuple(words.split())
        # then its first word is a command, and a second word is one too where it names a group
        if (parts[0],) not in known or (
            len(parts) == 2 and isinstance(magnetiq.commands[parts[0]], click.Group) and parts not in known
        ):
            missing.append(words)
    assert missing == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_make_target_the_documents_show_exists(document: Path) -> None:
    # given the Makefile's targets
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    # when every `make <target>` a document shows is read
    shown = {words.split()[0] for words in shown_commands(document, "make")}
    # then each is a target
    assert shown - targets == set()
