"""deploy/prometheus and deploy/grafana against promtool, the fleet's metric names and a real Prometheus."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from sqlalchemy import text

from app.tasks.booking_tasks import process_payment
from tests.support.environment import unavailable
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess, terminate
from workers import metrics

PROMTOOL = Path("/usr/bin/promtool")
PROMETHEUS = Path("/usr/bin/prometheus")
CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
ALERTS_TEST = ROOT / "deploy/prometheus/alerts_test.yml"
DASHBOARD = ROOT / "deploy/grafana/magnetiq-fleet.json"
PAYMENT = "app.tasks.booking_tasks.process_payment"
#: Sample-name suffixes of each metric type, as the text exposition format writes them.
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
#: What Prometheus itself adds to every scrape (alerts may use it; the dashboard does not).
SCRAPE_SERIES = frozenset({"up"})
#: PromQL words that look like a metric name but are not one.
PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
)
#: What an expression's metric names are found in once strings, matchers and ranges are gone.
_STRIPPED = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]|\b(?:by|without|on|ignoring)\s*\([^)]*\)')
_NAME = re.compile(r"(?<![\w$.])[A-Za-z_:][\w:]*")


def load(path: Path) -> Any:
    """Parse one of the deploy YAML files."""
    return yaml.safe_load(path.read_text())


def rules(path: Path) -> list[dict[str, Any]]:
    """Every rule of a Prometheus rule file."""
    return [rule for group in load(path)["groups"] for rule in group["rules"]]


def tool(path: Path) -> Path:
    """Return ``path`` if it is installed, else skip (fail under CI)."""
    if not path.exists():
        unavailable(f"{path} missing: `apt-get install prometheus` (Debian's 2.42 package)")
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def exported_names() -> frozenset[str]:
    """Every sample name a worker's or beat's /metrics can serve, read from workers.metrics itself."""
    families = [
        family
        for value in vars(metrics).values()
        if isinstance(value, MetricWrapperBase)  # the module's Counter, Gauge and Histogram objects
        for family in value.describe()
    ]
    families += metrics.BrokerCollector._families({})
    families += metrics.WorkerStateCollector().collect()
    names = set()
    for family in families:
        suffixes = SUFFIXES.get(family.type, ("",))  # a gauge's sample is its family name
        names.update(family.name + suffix for suffix in suffixes)
    return frozenset(names)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions and keywords left out)."""
    stripped = _STRIPPED.sub(" ", expr)
    return {
        match.group()
        for match in _NAME.finditer(stripped)
        if match.group() not in PROMQL_WORDS and not stripped[match.end() :].lstrip().startswith("(")
    }


def panel_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every target, rows' nested panels included."""
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner["title"], target["expr"]


def test_metric_names_parser() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (name, le) (rate(celery_task_runtime_bucket{le!="1"}[1h] offset 1d)))'
        " > 2 * time() - max without (job) (magnetiq_dlq_messages) or on (queue_name) up == bool 0"
    )
    assert metric_names(expr) == {"celery_task_runtime_bucket", "magnetiq_dlq_messages", "up"}


def test_config_is_valid_with_its_rules() -> None:
    result = run(tool(PROMTOOL), "check", "config", CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alerts.yml" in result.stdout  # the rule file was checked too
    jobs = load(CONFIG)["scrape_configs"]
    assert [job["job_name"] for job in jobs] == [
        "magnetiq-email",
        "magnetiq-bulk",
        "magnetiq-booking",
        "magnetiq-maintenance",
        "magnetiq-beat",
    ]
    targets = [target for job in jobs for static in job["static_configs"] for target in static["targets"]]
    assert targets == [f"127.0.0.1:{port}" for port in range(9808, 9813)]


def test_compose_config_is_valid_and_scrapes_the_compose_services() -> None:
    config = ROOT / "deploy/prometheus/prometheus-compose.yml"
    result = run(tool(PROMTOOL), "check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alerts.yml" in result.stdout
    services = set(load(ROOT / "deploy/compose.yaml")["services"])
    hosts = {
        target.split(":")[0]
        for job in load(config)["scrape_configs"]
        for sd in (*job.get("static_configs", []), *job.get("dns_sd_configs", []))
        for target in sd.get("targets", sd.get("names", []))
    }
    assert hosts == {
        "worker-email",
        "worker-bulk",
        "worker-booking",
        "worker-maintenance",
        "beat",
        "rabbitmq",
    }
    assert hosts <= services


def test_alert_rules_unit_tests_pass() -> None:
    result = run(tool(PROMTOOL), "test", "rules", ALERTS_TEST)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = [rule["alert"] for rule in rules(ALERTS)]
    assert len(alerts) == 7
    tested = {case["alertname"] for test in load(ALERTS_TEST)["tests"] for case in test["alert_rule_test"]}
    assert tested == set(alerts)  # every alert has cases


def test_dashboard_and_alerts_use_only_exported_metrics() -> None:
    exported = exported_names()
    assert {"celery_task_succeeded_total", "celery_task_runtime_bucket", "magnetiq_dlq_messages"} <= exported
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    exprs = list(panel_exprs(dashboard))
    assert len(exprs) >= 12
    for title, expr in exprs:
        used = metric_names(expr)
        assert used, (title, expr)
        assert used <= exported, (title, sorted(used - exported))
    for alert, expr in ((rule["alert"], rule["expr"]) for rule in rules(ALERTS)):
        used = metric_names(expr)
        assert used, (alert, expr)
        assert used <= exported | SCRAPE_SERIES, (alert, sorted(used - exported))


def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            body = json.load(reply)
    except OSError:  # not listening yet
        return []
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@pytest.mark.slow
def test_prometheus_scrapes_a_real_booking_worker(
    start_worker: Callable[..., WorkerProcess], database: Any, tmp_path: Path
) -> None:
    prometheus = tool(PROMETHEUS)
    metrics_port, api_port = free_port(), free_port()
    start_worker("booking", METRICS_PORT=str(metrics_port))
    tasks = 3
    for _ in range(tasks):
        with database.begin() as db:
            payment_id = db.execute(
                text("INSERT INTO payments (amount_cents) VALUES (100) RETURNING id")
            ).scalar_one()
        assert process_payment.delay(payment_id).get(timeout=30) == f"Payment {payment_id} processed"

    config = tmp_path / "prometheus.yml"
    scrape = {"job_name": "magnetiq-booking", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
    # JSON is YAML: no YAML library needed to write it.
    config.write_text(json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": [scrape]}))
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(prometheus),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{api_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def scraped() -> list[dict[str, Any]]:
                if proc.poll() is not None:
                    raise AssertionError(f"prometheus exited:\n{log_path.read_text(errors='replace')}")
                return [
                    sample
                    for sample in query(api_port, "celery_task_succeeded_total")
                    if sample["metric"].get("name") == PAYMENT
                    and sample["metric"].get("queue_name") == "booking"
                    and float(sample["value"][1]) == tasks
                ]

            try:
                found = wait_until(scraped, 60, f"prometheus to scrape {tasks} succeeded tasks", interval=0.5)
            except AssertionError as exc:
                seen = query(api_port, "celery_task_succeeded_total")
                raise AssertionError(
                    f"{exc}; last query: {seen}\n{log_path.read_text(errors='replace')}"
                ) from None
            assert found[0]["metric"]["job"] == "magnetiq-booking"
        finally:
            terminate(proc, 10)
