"""Contract: the import rules of README.md "Import rules" (light producer, pure routing and domain)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.processes import run_python

#: Modules a producer (the FastAPI service) must never load by importing app.producer.
PRODUCER_FORBIDDEN = ("app.tasks", "app.mail", "app.booking", "app.maintenance.service", "workers")
#: What routing may import besides the standard library.
ROUTING_ALLOWED = {"kombu", "routing"}
#: What domain packages must never import (Celery, broker wiring, worker code).
DOMAIN_FORBIDDEN = ("celery", "routing", "workers", "app.tasks", "app.celery_app", "app.producer")
DOMAIN_PACKAGES = ("app/mail", "app/booking", "app/maintenance")
#: The command line: process code (worker, beat, metrics) never imports it, nor the launcher.
CLI_ONLY = ("workers.cli", "workers.__main__")


def imported_modules(path: Path) -> set[str]:
    """Return the absolute dotted names every import statement in ``path`` refers to."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(f"{prefix}.") for prefix in prefixes)


def source_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).glob("*.py"))


def modules_loaded_by(script: str) -> list[str]:
    """Every module a fresh interpreter has loaded after running ``script``."""
    out = run_python("-c", f"{script}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))")
    loaded: list[str] = json.loads(out.strip().splitlines()[-1])
    return loaded


def test_importing_the_producer_loads_no_task_domain_or_worker_code() -> None:
    # given a fresh interpreter
    # when it imports app.producer and lists its modules
    loaded = modules_loaded_by("import app.producer")

    # then none of the task, domain or worker modules were loaded
    assert "app.producer" in loaded
    assert [module for module in loaded if within(module, PRODUCER_FORBIDDEN)] == []


@pytest.mark.parametrize("path", source_files("routing"), ids=lambda p: p.name)
def test_routing_imports_only_kombu_and_the_standard_library(path: Path) -> None:
    # given a routing module
    # when its imports are read
    roots = {module.split(".")[0] for module in imported_modules(path)}

    # then each is kombu, routing itself or the standard library
    assert roots - ROUTING_ALLOWED - set(sys.stdlib_module_names) == set()


@pytest.mark.parametrize("path", source_files(*DOMAIN_PACKAGES), ids=lambda p: "/".join(p.parts[-2:]))
def test_domain_modules_import_no_celery_routing_or_workers(path: Path) -> None:
    # given a domain module
    # when its imports are read
    modules = imported_modules(path)

    # then none of them is Celery, routing, worker or task code
    assert sorted(module for module in modules if within(module, DOMAIN_FORBIDDEN)) == []


@pytest.mark.parametrize(
    "path",
    source_files("app", *DOMAIN_PACKAGES, "app/tasks", "workers"),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_process_code_imports_neither_the_command_line_nor_the_launcher(path: Path) -> None:
    # given a module a worker, beat or producer process loads (the workers/cli package left out)
    # when its imports are read
    modules = imported_modules(path)

    # then none of them is the command line or `python -m workers`
    assert sorted(module for module in modules if within(module, CLI_ONLY)) == []


def test_the_checks_see_every_module() -> None:
    # given the folders the import rules cover
    # when their modules are listed
    # then none is empty (a moved folder must not silently pass)
    assert source_files("routing")
    assert source_files("workers")
    for folder in DOMAIN_PACKAGES:
        assert source_files(folder), folder


#: What only the email worker uses: booking and maintenance processes never load it.
SENDING_ONLY = ("gevent", "aiosmtplib", "jinja2", "app.mail.smtp", "app.mail.service", "app.mail.render")


def test_a_worker_that_does_not_send_mail_loads_no_smtp_client_gevent_or_templates() -> None:
    # given a fresh interpreter, not patched by gevent (as a prefork worker's is)
    # when it imports the worker's app and every task module, as a worker boots
    boot = "import workers.entry\nworkers.entry.celery_app.loader.import_default_modules()"
    loaded = modules_loaded_by(boot)

    # then the email tasks are registered, but what sends mail was not loaded
    assert "app.tasks.email_tasks" in loaded
    assert [module for module in loaded if within(module, SENDING_ONLY)] == []
