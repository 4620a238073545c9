"""The WaveflowQueue CRD: a valid, structural CRD whose schema accepts good specs and refuses bad
ones (validated with jsonschema on its openAPIV3Schema, as the API server would)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

CRD_PATH = Path(__file__).resolve().parents[2] / "charts/waveflow/files/crds/waveflowqueue.yaml"
CRD = yaml.safe_load(CRD_PATH.read_text())
[VERSION] = CRD["spec"]["versions"]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]

GOOD: dict[str, Any] = {
    "queueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/audio",
    "region": "eu-west-1",
    "deadLetterQueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/audio-dlq",
    "bucket": "my-bucket",
    "uploadPrefixes": ["audio/"],
    "webhookUrl": "https://backend.example/webhook",
    "webhookSecretRef": {"name": "waveflow-webhook", "key": "WEBHOOK_SECRET"},
    "maxInFlight": 10, "receiveBatchSize": 10, "waitTimeSeconds": 20,
    "visibilityTimeoutSeconds": 300,
    "job": {
        "image": "ghcr.io/waveflow/job:0.1.0", "imagePullPolicy": "IfNotPresent",
        "imagePullSecrets": [{"name": "regcred"}],
        "resources": {"hash": {"requests": {"cpu": "100m", "memory": "128Mi"},
                               "limits": {"memory": "256Mi"}},
                      "analysis": {"requests": {"cpu": 1, "memory": "1Gi"}}},
        "activeDeadlineSeconds": {"hash": 600, "duplicate": 300, "analysis": 3600},
        "backoffLimit": 2, "ttlSecondsAfterFinished": 3600,
        "scratch": {"sizeLimit": "4Gi", "medium": ""},
        "serviceAccountName": "", "env": [{"name": "LOG_LEVEL", "value": "DEBUG"}],
        "envFrom": [{"secretRef": {"name": "aws"}}],
        "nodeSelector": {"kubernetes.io/arch": "arm64"},
        "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}}, "priorityClassName": "batch",
        "podLabels": {"team": "audio"}, "podAnnotations": {"a": "b"}, "doNotDisrupt": True,
    },
}


def resource(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    document = {"apiVersion": "waveflow.io/v1alpha1", "kind": "WaveflowQueue",
                "metadata": {"name": "audio"}, "spec": spec}
    if status is not None:
        document["status"] = status
    return document


def errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(document)]


def with_change(path: str, value: Any) -> dict[str, Any]:
    """GOOD with one field changed (``None`` removes it)."""
    spec = copy.deepcopy(GOOD)
    *parents, leaf = path.split(".")
    node = spec
    for part in parents:
        node = node[part]
    if value is None:
        del node[leaf]
    else:
        node[leaf] = value
    return spec


def test_the_crd_is_a_valid_custom_resource_definition() -> None:
    kubernetes_validate.validate(CRD, latest_version(), strict=True)
    assert CRD["spec"]["names"]["shortNames"] == ["wfq"]
    assert CRD["spec"]["group"] == "waveflow.io" and VERSION["name"] == "v1alpha1"
    assert VERSION["subresources"] == {"status": {}}


def _nodes(node: dict[str, Any], where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield where, node
    for name, child in (node.get("properties") or {}).items():
        yield from _nodes(child, f"{where}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{where}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{where}{{}}")


def test_the_schema_is_structural_every_node_has_a_type() -> None:
    untyped = [where for where, node in _nodes(SCHEMA) if "type" not in node
               and not node.get("x-kubernetes-int-or-string")]
    assert untyped == []
    assert "$ref" not in CRD_PATH.read_text()


def test_kubectl_get_shows_queue_in_flight_succeeded_failed_ready_and_age() -> None:
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert columns["Queue"] == ".spec.queueUrl"
    assert columns["In Flight"] == ".status.counts.running"
    assert columns["Succeeded"] == ".status.counts.succeeded"
    assert columns["Failed"] == ".status.counts.failed"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_a_complete_spec_and_a_minimal_spec_are_valid() -> None:
    assert errors(resource(GOOD)) == []
    minimal = {"queueUrl": GOOD["queueUrl"], "bucket": "b-1", "webhookUrl": GOOD["webhookUrl"],
               "job": {"image": "job:1"}}
    assert errors(resource(minimal)) == []


def test_a_status_as_the_operator_writes_it_is_valid() -> None:
    since = "2026-11-26T10:00:00Z"
    status = {"conditions": [{"type": "Ready", "status": "True", "reason": "Polling",
                              "message": "ok", "lastTransitionTime": since},
                             {"type": "Polling", "status": "False", "reason": "MaxInFlight",
                              "message": "10 in flight", "lastTransitionTime": since}],
              "counts": {"received": 3, "running": 1, "succeeded": 1, "rejected": 0,
                         "failed": 1, "deadLettered": 1},
              "lastPollTime": "2026-11-26T10:00:01Z", "lastError": ""}
    assert errors(resource(GOOD, status)) == []
    bad = copy.deepcopy(status)
    bad["conditions"][0]["status"] = "Yes"
    assert errors(resource(GOOD, bad)) != []


@pytest.mark.parametrize("path", ["queueUrl", "bucket", "webhookUrl", "job", "job.image"])
def test_required_fields_are_required(path: str) -> None:
    assert errors(resource(with_change(path, None))) != []


@pytest.mark.parametrize(("path", "value"), [
    ("maxInFlight", 0), ("maxInFlight", 1001), ("maxInFlight", "10"),
    ("receiveBatchSize", 0), ("receiveBatchSize", 11),
    ("waitTimeSeconds", -1), ("waitTimeSeconds", 21),
    ("visibilityTimeoutSeconds", 29), ("visibilityTimeoutSeconds", 43201),
    ("queueUrl", "sqs://not-http"), ("webhookUrl", ""), ("bucket", "Upper_Case"),
    ("region", "Europe"), ("endpointUrl", "localhost:5000"),
    ("webhookSecretRef", {"key": "WEBHOOK_SECRET"}),
    ("job.imagePullPolicy", "Sometimes"), ("job.backoffLimit", -1),
    ("job.activeDeadlineSeconds", {"hash": 0}), ("job.ttlSecondsAfterFinished", -5),
    ("job.scratch", {"sizeLimit": "4 gigabytes"}), ("job.scratch", {"medium": "Disk"}),
    ("job.resources", {"hash": {"requests": {"memory": "lots"}}}),
    ("job.env", [{"value": "no name"}]), ("job.doNotDisrupt", "yes"),
    ("job.nodeSelector", {"zone": 1}), ("job.tolerations", [{"operator": "Maybe"}]),
    ("uploadPrefixes", [""]),
])
def test_out_of_range_or_mistyped_fields_are_refused(path: str, value: Any) -> None:
    assert errors(resource(with_change(path, value))) != [], f"{path}={value!r} was accepted"


@pytest.mark.parametrize(("path", "value"), [
    ("maxInFlight", 1), ("maxInFlight", 1000), ("waitTimeSeconds", 0),
    ("visibilityTimeoutSeconds", 30), ("visibilityTimeoutSeconds", 43200),
    ("endpointUrl", "http://localstack:4566"), ("endpointUrl", ""), ("region", ""),
    ("job.scratch", {"sizeLimit": 1073741824, "medium": "Memory"}),
])
def test_boundary_values_are_accepted(path: str, value: Any) -> None:
    assert errors(resource(with_change(path, value))) == []
