"""deploy/: the image, compose file and Kubernetes manifests against their schemas and the fleet, offline."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.settings import Settings
from routing import names
from routing.accounts import check_password
from tests.support.deploy_files import DEPLOY, compose, secret_value
from tests.support.paths import ROOT
from workers.profiles import PROFILES

K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
SCHEMAS = ROOT / "tests" / "schemas"
DEFINITIONS = DEPLOY / "rabbitmq" / "definitions.json"
DEV_DEFINITIONS = DEPLOY / "rabbitmq" / "definitions.dev.json"
#: The Kubernetes version the manifests are written for (kubernetes-validate bundles its schemas).
KUBERNETES_VERSION = "1.30"
#: KEDA kinds and the vendored CRD of each.
KEDA_CRDS = {
    "ScaledObject": SCHEMAS / "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": SCHEMAS / "keda.sh_triggerauthentications.yaml",
}


def documents() -> list[tuple[str, dict[str, Any]]]:
    """Every Kubernetes object under deploy/k8s, with the file it is in."""
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def objects(kind: str) -> dict[str, dict[str, Any]]:
    """The objects of one kind, by name."""
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


def strict(schema: Any) -> Any:
    """A CRD's structural schema with unknown fields refused, as strict field validation does.

    Kubernetes prunes unknown fields silently; a test wants the typo reported.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    """A validator for one KEDA kind, from the vendored CRD's served version."""
    crd = yaml.safe_load(KEDA_CRDS[kind].read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    schema = strict(version["schema"]["openAPIV3Schema"])
    # metadata is validated by the API server itself, not by the CRD.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def fleet_image(deployment: dict[str, Any]) -> bool:
    """Whether a Deployment runs the fleet's own image."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return all(str(c["image"]).startswith("magnetiq-fleet:") for c in containers)


def deployment_of(profile: str) -> dict[str, Any]:
    return objects("Deployment")[f"worker-{profile}"]


# -- compose ------------------------------------------------------------------


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    """Validate a compose file with check-jsonschema's vendored Compose specification schema."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_file_matches_the_compose_specification() -> None:
    # given the compose file and check-jsonschema's vendored Compose schema (no network)
    # when it is validated
    done = check_compose(COMPOSE)
    # then it is valid
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_schema_check_refuses_a_misspelt_key(tmp_path: Path) -> None:
    # given the compose file with one service key misspelt
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periods:", 1))
    # when it is validated
    done = check_compose(bad)
    # then the check fails and names the key
    assert done.returncode == 1
    assert "stop_grace_periods" in done.stdout


def test_compose_runs_every_role_of_one_image() -> None:
    # given the compose services
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    grace_limit = Settings().task_time_limit
    # when the fleet's roles are read
    for role in [*PROFILES, "beat"]:
        service = services["beat" if role == "beat" else f"worker-{role}"]
        # then each runs the one image with an exec-form `python -m workers <role>`
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["command"][:4] == ["python", "-m", "workers", role]
        # and is given longer than the hard time limit to shut down warm
        assert _seconds(service["stop_grace_period"]) > grace_limit
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
    # and the supporting services are there
    assert {"rabbitmq", "postgres", "smtp", "flower", "prometheus", "grafana"} <= set(services)
    configs = yaml.safe_load(COMPOSE.read_text())["configs"]
    assert "rabbitmq_prometheus" in configs["rabbitmq-plugins"]["content"]
    volumes = services["rabbitmq"]["volumes"]
    assert "./rabbitmq/definitions.dev.json:/etc/rabbitmq/definitions.json:ro" in volumes


def test_compose_mounts_files_that_exist() -> None:
    # given every bind mount of the compose file that is not the broker's definitions
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    sources = [
        volume.split(":", 1)[0]
        for service in services.values()
        for volume in service.get("volumes", [])
        if volume.startswith("./") and "definitions.json" not in volume
    ]
    # then each source exists beside the compose file
    assert sources
    for source in sources:
        assert (DEPLOY / source).exists(), source


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return int(match.group(1))


# -- image --------------------------------------------------------------------


def test_image_runs_as_a_non_root_user_with_an_exec_form_command() -> None:
    # given the Dockerfile's final stage
    final = DOCKERFILE.read_text().rsplit("\nFROM ", 1)[1]
    lines = [line for line in final.splitlines() if line and not line.startswith(("#", " "))]
    instructions = [line.split(None, 1) for line in lines]
    by_name = {name: value for name, *rest in instructions for value in rest}
    # then it runs as a numeric non-root uid
    user = by_name["USER"].split(":")[0]
    assert user.isdigit() and int(user) > 0
    # and its command is exec form (JSON), so SIGTERM reaches Celery, not a shell
    assert json.loads(by_name["CMD"])[:3] == ["python", "-m", "workers"]
    assert "ENTRYPOINT" not in by_name


def test_image_copies_only_what_exists() -> None:
    # given the build stage's COPY sources (relative to the repository root)
    sources = [
        part
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for part in line.split()[1:-1]
    ]
    # then every one of them is in the repository
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source


# -- Kubernetes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "doc"),
    [(f, d) for f, d in documents() if not d["apiVersion"].startswith("keda.sh/")],
    ids=lambda value: value if isinstance(value, str) else value["kind"],
)
def test_manifest_matches_the_kubernetes_schema(where: str, doc: dict[str, Any]) -> None:
    # when a built-in object is validated against the bundled Kubernetes schema (strict: no unknown fields)
    # then it is valid
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubernetes_schema_check_refuses_a_misspelt_field() -> None:
    # given a Deployment with a probe field misspelt
    bad = copy.deepcopy(deployment_of("booking"))
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSecond"] = 20
    # then validation fails
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("where", "doc"),
    [(f, d) for f, d in documents() if d["apiVersion"].startswith("keda.sh/")],
    ids=lambda value: value if isinstance(value, str) else f"{value['kind']}-{value['metadata']['name']}",
)
def test_keda_object_matches_the_keda_crd(where: str, doc: dict[str, Any]) -> None:
    # when a KEDA object is validated against KEDA's own CRD schema (vendored)
    errors = [error.message for error in crd_validator(doc["kind"]).iter_errors(doc)]
    # then it is valid
    assert errors == []
    assert doc["apiVersion"] == "keda.sh/v1alpha1"


def test_keda_schema_check_refuses_a_misspelt_field() -> None:
    # given a ScaledObject with a field misspelt
    bad = copy.deepcopy(objects("ScaledObject")["worker-booking"])
    bad["spec"]["minReplicas"] = bad["spec"].pop("minReplicaCount")
    # then the CRD schema refuses it
    assert list(crd_validator("ScaledObject").iter_errors(bad))


@pytest.mark.parametrize("profile", list(PROFILES))
def test_each_profile_has_a_deployment_that_drains_within_its_grace(profile: str) -> None:
    # given the profile's Deployment and the fleet's configuration
    deployment = deployment_of(profile)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = objects("ConfigMap")["magnetiq-config"]["data"]
    # then it runs the profile from the one image, exec form
    assert container["command"][:4] == ["python", "-m", "workers", profile]
    # with a grace period above the hard time limit the pods are configured with
    assert pod["terminationGracePeriodSeconds"] > int(config["TASK_TIME_LIMIT"])
    assert pod["terminationGracePeriodSeconds"] > Settings().task_time_limit
    # as a non-root user
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    # with resources and the fleet's own probes (liveness never asks the broker)
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["memory"]
    assert container["livenessProbe"]["exec"]["command"][3:5] == ["live", profile]
    assert container["readinessProbe"]["exec"]["command"][3:5] == ["ready", profile]
    # and the metrics and heartbeat directories are writable
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert {config["METRICS_DIR"].rsplit("/", 1)[0], config["HEALTH_DIR"].rsplit("/", 1)[0]} <= mounts


def _mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


@pytest.mark.parametrize("profile", [name for name, p in PROFILES.items() if p.pool == "prefork"])
def test_prefork_pods_run_the_profiles_processes_per_core_within_their_memory(profile: str) -> None:
    # given a prefork profile, its Deployment and its compose service
    shape = PROFILES[profile]
    (container,) = deployment_of(profile)["spec"]["template"]["spec"]["containers"]
    service = compose()["services"][f"worker-{profile}"]
    # when the processes a pod runs are read from its command (in a container the core count
    # Celery sees is the node's, so a per-core profile names its concurrency)
    command = container["command"]
    flag = command.index("--concurrency") + 1 if "--concurrency" in command else None
    processes = int(command[flag]) if flag else shape.concurrency
    # then they are the profile's per core of the pod's CPU request, in Kubernetes and compose alike
    cpu = container["resources"]["requests"]["cpu"]
    assert processes == (shape.concurrency or shape.per_core * int(cpu))
    assert service["command"] == command
    # and the memory limit holds every child at its recycling size plus the main process at its guard
    assert shape.max_memory_per_child
    most = processes * shape.max_memory_per_child / 1024 + Settings().worker_max_memory_mib
    assert _mib(container["resources"]["limits"]["memory"]) >= most


@pytest.mark.parametrize("profile", list(PROFILES))
def test_each_profile_scales_on_its_own_queue(profile: str) -> None:
    # given the profile's ScaledObject and PodDisruptionBudget
    scaled = objects("ScaledObject")[f"worker-{profile}"]
    budget = objects("PodDisruptionBudget")[f"worker-{profile}"]
    labels = deployment_of(profile)["spec"]["template"]["metadata"]["labels"]
    # then KEDA scales the profile's Deployment on the length of the queue it consumes
    assert scaled["spec"]["scaleTargetRef"]["name"] == f"worker-{profile}"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert (trigger["metadata"]["queueName"],) == PROFILES[profile].queues
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert trigger["authenticationRef"]["name"] in objects("TriggerAuthentication")
    # and the budget selects the same pods
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # and no replica count falls below what the budget needs to allow a drain
    if "minAvailable" in budget["spec"]:
        assert scaled["spec"]["minReplicaCount"] > budget["spec"]["minAvailable"]


def test_every_work_queue_has_a_scaled_profile() -> None:
    queues = {so["spec"]["triggers"][0]["metadata"]["queueName"] for so in objects("ScaledObject").values()}
    assert queues == set(names.WORK_QUEUES)


def test_beat_runs_a_leader_and_a_standby_on_another_node_with_no_state() -> None:
    beat = objects("Deployment")["beat"]
    pod = beat["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # one leads, one stands by (any number may run and overlap: slots are claimed in PostgreSQL)
    assert beat["spec"]["replicas"] == 2
    assert beat["spec"]["strategy"]["type"] == "RollingUpdate"
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert (
        spread["labelSelector"]["matchLabels"].items()
        <= beat["spec"]["template"]["metadata"]["labels"].items()
    )
    assert container["command"] == ["python", "-m", "workers", "beat"]
    # and beat keeps no local state: no schedule file, no volume for one
    assert "BEAT_SCHEDULE_FILE" not in {env["name"] for env in container.get("env", [])}
    assert {mount["mountPath"] for mount in container["volumeMounts"]} == {"/run/magnetiq", "/tmp"}
    assert "beat" not in objects("ScaledObject")


def test_configuration_reaches_every_pod() -> None:
    # given the ConfigMap and Secret
    config, secret = objects("ConfigMap")["magnetiq-config"], objects("Secret")["magnetiq-secrets"]
    # then together they hold the fixed settings, with secrets only in the Secret
    assert {"CELERY_BROKER_URL", "DATABASE_URL", "SMTP_PASSWORD"} <= set(secret["stringData"])
    assert not {"CELERY_BROKER_URL", "DATABASE_URL", "SMTP_PASSWORD"} & set(config["data"])
    # and the settings they give are accepted by the fleet once the placeholders are replaced
    shipped = {k.lower(): v for k, v in {**config["data"], **secret["stringData"]}.items()}
    Settings(**{k: v.replace("REPLACE_ME", "Zr7-real-Secret") for k, v in shipped.items()})
    # and refused as shipped: production never starts on a placeholder
    with pytest.raises(ValueError, match="placeholder password"):
        Settings(**shipped)
    # and every fleet pod (the fleet's image; PgBouncer is not one) reads both
    fleet = [d for d in objects("Deployment").values() if fleet_image(d)]
    assert {d["metadata"]["name"] for d in fleet} >= {"beat", "worker-booking", "worker-email"}
    for deployment in fleet:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert refs == {"magnetiq-config", "magnetiq-secrets"}


# -- broker accounts ----------------------------------------------------------


def broker_user(url: str) -> str | None:
    return urlsplit(url).username


def test_each_compose_role_connects_as_its_own_account() -> None:
    # given the compose services, every default substituted
    services = compose()["services"]
    # then workers and Flower (ops: remote control) connect as the worker account
    for name in [*(f"worker-{profile}" for profile in PROFILES), "flower"]:
        assert broker_user(services[name]["environment"]["CELERY_BROKER_URL"]) == "magnetiq-worker", name
    # and beat and the migration job, which publish or touch no queue, as the producer account
    for name in ("beat", "migrate"):
        assert broker_user(services[name]["environment"]["CELERY_BROKER_URL"]) == "magnetiq-producer", name
    # and RabbitMQ loads the definitions that give those accounts their dev passwords
    assert (
        "./rabbitmq/definitions.dev.json:/etc/rabbitmq/definitions.json:ro" in services["rabbitmq"]["volumes"]
    )


def test_each_kubernetes_role_connects_as_its_own_account() -> None:
    # given the shipped Secrets, the beat Deployment and KEDA's authentication
    beat = objects("Deployment")["beat"]["spec"]["template"]["spec"]["containers"][0]
    (broker_env,) = [env for env in beat["env"] if env["name"] == "CELERY_BROKER_URL"]
    (target,) = objects("TriggerAuthentication")["magnetiq-rabbitmq"]["spec"]["secretTargetRef"]
    # then workers connect as the worker account, beat as the producer, KEDA as monitoring
    assert broker_user(secret_value("magnetiq-secrets", "CELERY_BROKER_URL")) == "magnetiq-worker"
    ref = broker_env["valueFrom"]["secretKeyRef"]
    assert broker_user(secret_value(ref["name"], ref["key"])) == "magnetiq-producer"
    assert broker_user(secret_value(target["name"], target["key"])) == "magnetiq-monitoring"
    # and no worker pod sees another account's URL
    assert not {"RABBITMQ_HOST", "host"} & set(objects("Secret")["magnetiq-secrets"]["stringData"])


def compose_broker_urls() -> list[str]:
    """Every broker URL of the compose file, defaults substituted."""
    return [
        value
        for service in compose()["services"].values()
        for key, value in (service.get("environment") or {}).items()
        if key == "CELERY_BROKER_URL"
    ]


def shipped_broker_urls() -> list[str]:
    """Every broker URL the compose file (defaults substituted) and the Kubernetes Secrets ship."""
    urls = compose_broker_urls()
    for secret in objects("Secret").values():
        urls += [v for v in secret.get("stringData", {}).values() if v.startswith(("amqp://", "amqps://"))]
    return urls


@pytest.mark.parametrize("url", sorted(set(shipped_broker_urls())))
def test_production_refuses_every_broker_password_the_manifests_ship(url: str) -> None:
    # given a shipped broker URL (a dev password or a REPLACE_ME placeholder)
    # when production settings are built with it
    # then they are refused
    real_database = "postgresql://magnetiq:Zr7-real-Secret@postgres.internal:5432/magnetiq"
    with pytest.raises(ValueError, match="CELERY_BROKER_URL uses a placeholder password"):
        Settings(magnetiq_env="prod", celery_broker_url=url, database_url=real_database)


def test_the_dev_definitions_are_the_shipped_ones_with_the_compose_passwords() -> None:
    # given the shipped definitions (no secret) and the ones compose mounts
    shipped = json.loads(DEFINITIONS.read_text())
    dev = json.loads(DEV_DEFINITIONS.read_text())
    # then they differ in the password hashes alone
    assert all(user["password_hash"] == "" for user in shipped["users"])
    stripped = copy.deepcopy(dev)
    for user in stripped["users"]:
        user["password_hash"] = ""
    assert stripped == shipped
    # and each hash is RabbitMQ's sha256 hash of the password compose connects with
    passwords = {urlsplit(url).username: urlsplit(url).password for url in compose_broker_urls()}
    passwords["magnetiq-monitoring"] = "magnetiq-monitoring-dev"  # documented; no compose service uses it
    for user in dev["users"]:
        assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
        assert check_password(passwords[user["name"]] or "", user["password_hash"]), user["name"]
