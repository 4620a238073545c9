"""Alerts, runbooks, the dashboard and the ServiceMonitor: real promtool, real metric names."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from chart.helm import CHART, REPO, find
from chart.promql import (
    documented_labels,
    documented_series,
    exposition_series,
    label_names,
    metric_names,
)

Manifests = list[dict[str, Any]]
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
ALERT_TESTS = Path(__file__).parent / "promtool" / "alerts_test.yaml"
RUNBOOKS = CHART / "docs" / "runbooks"
#: Labels Prometheus adds to every scraped series (ServiceMonitor target labels).
TARGET_LABELS = frozenset({"namespace", "job", "instance", "service", "pod", "container"})


def rules(manifests: Manifests) -> list[dict[str, Any]]:
    spec = find(manifests, "PrometheusRule")["spec"]
    return [rule for group in spec["groups"] for rule in group["rules"]]


def dashboard(manifests: Manifests) -> dict[str, Any]:
    configmap = find(manifests, "ConfigMap", "-dashboard")
    parsed: dict[str, Any] = json.loads(configmap["data"]["waveflow.json"])
    return parsed


def dashboard_expressions(board: dict[str, Any]) -> dict[str, str]:
    """Every PromQL expression of the dashboard (panels and variables), by where it is."""
    found = {}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            found[f"variable {variable['name']}"] = query.removeprefix("label_values(").rsplit(
                ",", 1
            )[0]
    return found


def all_expressions(manifests: Manifests) -> dict[str, str]:
    found = {f"alert {rule['alert']}": rule["expr"] for rule in rules(manifests)}
    found.update(dashboard_expressions(dashboard(manifests)))
    return found


def promtool() -> str:
    path = shutil.which("promtool")
    assert path is not None, "promtool is not installed: `make tools-promtool` (make test does)"
    return path


def test_every_alert_and_panel_reads_only_documented_metrics(all_on_manifests: Manifests) -> None:
    documented = documented_series(ARCHITECTURE)
    assert len(documented) >= 16
    for where, expr in all_expressions(all_on_manifests).items():
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= documented, f"{where}: {names - documented} not in ARCHITECTURE.md"


def test_every_alert_and_panel_uses_only_documented_labels(all_on_manifests: Manifests) -> None:
    allowed = documented_labels(ARCHITECTURE) | TARGET_LABELS
    for where, expr in all_expressions(all_on_manifests).items():
        assert label_names(expr) <= allowed, f"{where}: {label_names(expr) - allowed}"


def test_the_dashboard_shows_what_operators_watch(all_on_manifests: Manifests) -> None:
    used = set().union(
        *map(metric_names, dashboard_expressions(dashboard(all_on_manifests)).values())
    )
    for needed in (
        "waveflow_jobs_finished_total",  # throughput by task and outcome, failures
        "waveflow_queue_messages",  # queue depth
        "waveflow_jobs_in_flight",
        "waveflow_dispatch_latency_seconds_bucket",
        "waveflow_job_duration_seconds_bucket",
        "waveflow_messages_dead_lettered_total",  # dead-lettered by reason
        "waveflow_audio_seconds_processed_total",
        "waveflow_bytes_processed_total",
    ):
        assert needed in used


def test_the_dashboard_configmap_is_labelled_for_grafanas_sidecar(
    all_on_manifests: Manifests,
) -> None:
    configmap = find(all_on_manifests, "ConfigMap", "-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = dashboard(all_on_manifests)
    assert board["uid"] == "waveflow-overview"
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])


@pytest.fixture(scope="module")
def scraped_series() -> Iterator[set[str]]:
    """Series names from a real scrape of the operator's `/metrics` endpoint over loopback."""
    from waveflow_operator import metrics
    server = metrics.serve(metrics.Metrics(), 0, host="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            yield exposition_series(response.read().decode())
    finally:
        server.shutdown()
        server.server_close()


def test_every_alert_and_panel_reads_metrics_the_operator_exports(
    all_on_manifests: Manifests, scraped_series: set[str]
) -> None:
    for where, expr in all_expressions(all_on_manifests).items():
        missing = metric_names(expr) - scraped_series
        assert not missing, f"{where}: {missing} not exported by waveflow_operator.metrics"


def test_every_alert_links_to_its_runbook(all_on_manifests: Manifests) -> None:
    for rule in rules(all_on_manifests):
        name = rule["alert"]
        assert rule["annotations"]["runbook_url"].endswith(f"/docs/runbooks/{name}.md")
        runbook = RUNBOOKS / f"{name}.md"
        assert runbook.exists(), f"no runbook for {name}"
        assert runbook.read_text().startswith(f"# {name}\n")
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description"} <= set(rule["annotations"])


def test_every_alert_has_a_promtool_unit_test(all_on_manifests: Manifests) -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    tested = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested == {rule["alert"] for rule in rules(all_on_manifests)}


def test_promtool_accepts_the_rendered_rules(all_on_manifests: Manifests, tmp_path: Path) -> None:
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(yaml.safe_dump(find(all_on_manifests, "PrometheusRule")["spec"]))
    result = subprocess.run(
        [promtool(), "check", "rules", str(rule_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules(all_on_manifests))} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass(
    all_on_manifests: Manifests, tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump(find(all_on_manifests, "PrometheusRule")["spec"])
    )
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    result = subprocess.run(
        [promtool(), "test", "rules", ALERT_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_service_monitor_scrapes_the_operators_metrics_port(
    all_on_manifests: Manifests,
) -> None:
    monitor = find(all_on_manifests, "ServiceMonitor")
    service = find(all_on_manifests, "Service", "-operator")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["waveflow"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_monitoring_objects_are_off_by_default(default_manifests: Manifests) -> None:
    present = {m["kind"] for m in default_manifests}
    assert not present & {"ServiceMonitor", "PrometheusRule", "ConfigMap"}


def test_the_operator_exports_every_documented_metric(scraped_series: set[str]) -> None:
    missing = documented_series(ARCHITECTURE) - scraped_series
    assert not missing, f"documented in ARCHITECTURE.md but not exported: {missing}"


#: The parts of prometheus-operator's CRDs (monitoring.coreos.com/v1) the chart uses: no
#: built-in schema exists for them, so their structure is checked here instead.
_DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["alert", "expr"],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "expr": {"type": "string"},
                                        "for": _DURATION,
                                        "labels": _STRINGS,
                                        "annotations": _STRINGS,
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {"matchLabels": _STRINGS},
                    "additionalProperties": False,
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                    "additionalProperties": False,
                },
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                        },
                    },
                },
            },
        },
    },
}


def test_the_prometheus_operator_objects_have_the_expected_structure(
    all_on_manifests: Manifests,
) -> None:
    jsonschema.Draft7Validator(PROMETHEUS_RULE_SCHEMA).validate(
        find(all_on_manifests, "PrometheusRule")
    )
    jsonschema.Draft7Validator(SERVICE_MONITOR_SCHEMA).validate(
        find(all_on_manifests, "ServiceMonitor")
    )
