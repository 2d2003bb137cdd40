"""The tests' own layout: helpers live in tests/support, once; nothing imports a conftest or a test module."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from tests.support.paths import ROOT

TESTS = ROOT / "tests"
SUPPORT = TESTS / "support"
#: Helpers more than one test package uses: each is defined once, in tests/support.
SHARED = (
    "free_port",
    "port_open",
    "wait_until",
    "pid_alive",
    "children",
    "descendants",
    "peak_rss_kib",
    "terminate",
    "queue_depth",
    "purge_all",
    "worker_env",
    "unavailable",
    "running_provider",
    "shared_provider",
)
#: Names of copies the shared helpers replaced (``wait_for`` became ``wait_until``): defined nowhere.
RETIRED = ("wait_for",)


def python_files() -> list[Path]:
    """Every Python file under tests/."""
    return sorted(TESTS.rglob("*.py"))


def imported_modules(tree: ast.Module) -> list[str]:
    """The dotted names a module imports (``from x import y`` gives ``x`` and ``x.y``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return found


def defined_functions(tree: ast.Module) -> list[str]:
    """Names of the functions and classes a module defines, at any depth, methods left out."""
    methods = {
        id(item)
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        for item in node.body
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    return [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and id(node) not in methods
    ]


def definitions() -> dict[str, list[Path]]:
    """Where each shared helper name is defined under tests/."""
    where: dict[str, list[Path]] = defaultdict(list)
    for path in python_files():
        for name in defined_functions(ast.parse(path.read_text(), str(path))):
            if name in SHARED or name in RETIRED:
                where[name].append(path.relative_to(ROOT))
    return where


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(TESTS)))
def test_nothing_imports_a_conftest_or_a_test_module(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    last = {name: name.rsplit(".", 1)[-1] for name in imported_modules(tree) if name.startswith("tests.")}
    wrong = [name for name, leaf in last.items() if leaf == "conftest" or leaf.startswith("test_")]
    assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}: move what it needs to tests/support"


@pytest.mark.parametrize("name", SHARED)
def test_a_shared_helper_is_defined_once_in_support(name: str) -> None:
    where = definitions()[name]
    assert len(where) == 1, f"{name} is defined {len(where)} times: {[str(p) for p in where]}"
    assert where[0].parent == SUPPORT.relative_to(ROOT), f"{name} belongs in tests/support, not {where[0]}"


@pytest.mark.parametrize("name", RETIRED)
def test_a_replaced_helper_is_defined_nowhere(name: str) -> None:
    where = definitions()[name]
    assert not where, f"{name} is defined in {[str(p) for p in where]}: use tests/support instead"


def test_the_checks_see_the_whole_tree() -> None:
    folders = {path.parent.name for path in python_files()}
    assert {"unit", "contract", "integration", "chaos", "bench", "support"} <= folders
