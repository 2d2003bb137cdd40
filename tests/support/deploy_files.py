"""The deploy files as the tests read them: compose with its variables substituted, Kubernetes objects."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.support.paths import ROOT

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
#: Compose's ``${VAR:-default}`` and ``${VAR}``.
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def substitute(text: str, environ: dict[str, str] | None = None) -> str:
    """Replace ``${VAR:-default}`` as compose does: the variable if set and not empty, else the default."""
    environ = environ or {}
    return _VARIABLE.sub(lambda m: environ.get(m.group(1)) or (m.group(2) or ""), text)


def compose(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file with its variables substituted (none set: every default)."""
    loaded: dict[str, Any] = yaml.safe_load(substitute(COMPOSE.read_text(), environ))
    return loaded


def compose_environment(service: str) -> dict[str, str]:
    """A compose service's environment, with YAML merges resolved and defaults substituted."""
    environment: dict[str, str] = compose()["services"][service].get("environment", {})
    return environment


def k8s_objects(kind: str) -> dict[str, dict[str, Any]]:
    """The Kubernetes objects of one kind under deploy/k8s, by name."""
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == kind:
                found[doc["metadata"]["name"]] = doc
    return found


def secret_value(name: str, key: str) -> str:
    """One value of a Secret the manifests ship."""
    value: str = k8s_objects("Secret")[name]["stringData"][key]
    return value
