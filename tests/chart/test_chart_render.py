"""`helm lint`, `helm template` and schema validation of everything the chart renders."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from chart.helm import CHART, CI_VALUES, find, render, run_helm, value_args

#: Kubernetes versions every manifest is validated against: the oldest we test and kind's newest.
K8S_VERSIONS = ("1.30.0", "1.35.0")
#: Custom resources without a built-in schema. WaveflowQueue is validated against its own CRD
#: below; ServiceMonitor and PrometheusRule structurally in test_chart_monitoring.py.
CUSTOM_KINDS = frozenset({"WaveflowQueue", "ServiceMonitor", "PrometheusRule"})
VALUE_FILES = {
    "defaults": (),
    "all-on": (CI_VALUES / "all-on-values.yaml",),
    "kind": (CI_VALUES / "kind-values.yaml",),
}
Manifests = list[dict[str, Any]]


def kinds(manifests: Manifests) -> list[str]:
    return sorted(m["kind"] for m in manifests)


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load((CHART / "files" / "crds" / "waveflowqueue.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("values", VALUE_FILES.values(), ids=VALUE_FILES.keys())
def test_helm_lint_passes_strictly(values: tuple[Path, ...]) -> None:
    result = run_helm("lint", "--strict", str(CHART), "-n", "waveflow", *value_args(values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_defaults_render_the_operator_without_a_queue_or_monitoring(
    default_manifests: Manifests,
) -> None:
    assert kinds(default_manifests) == [
        "CustomResourceDefinition",
        "Deployment",
        "Job",  # the helm-test hook
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceAccount",
    ]


def test_all_on_values_render_every_optional_part(all_on_manifests: Manifests) -> None:
    assert kinds(all_on_manifests) == [
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "Job",
        "PrometheusRule",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
        "ServiceAccount",
        "ServiceMonitor",
        "WaveflowQueue",
    ]


@pytest.mark.parametrize("values", VALUE_FILES.values(), ids=VALUE_FILES.keys())
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_builtin_manifest_validates_against_the_kubernetes_schemas(
    values: tuple[Path, ...], version: str
) -> None:
    manifests = render(values)
    checked = 0
    for manifest in manifests:
        if manifest["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(manifest, version, strict=True)
        checked += 1
    assert checked >= 8


@pytest.mark.parametrize("values", VALUE_FILES.values(), ids=VALUE_FILES.keys())
def test_every_manifest_is_namespaced_to_the_release_and_labelled(values: tuple[Path, ...]) -> None:
    for manifest in render(values):
        meta = manifest["metadata"]
        assert meta["labels"]["app.kubernetes.io/part-of"] == "waveflow", meta["name"]
        assert meta["labels"]["app.kubernetes.io/instance"] == "waveflow", meta["name"]
        if manifest["kind"] != "CustomResourceDefinition":
            assert meta["namespace"] == "waveflow", meta["name"]


@pytest.mark.parametrize(
    "values", [VALUE_FILES["all-on"], VALUE_FILES["kind"]], ids=["all-on", "kind"]
)
def test_the_default_waveflowqueue_validates_against_the_crds_own_schema(
    values: tuple[Path, ...],
) -> None:
    queue = find(render(values), "WaveflowQueue")
    jsonschema.Draft7Validator(crd_schema()).validate(queue)


def test_the_crd_schema_rejects_a_queue_missing_its_url(all_on_manifests: Manifests) -> None:
    queue = copy.deepcopy(find(all_on_manifests, "WaveflowQueue"))
    del queue["spec"]["queueUrl"]
    with pytest.raises(jsonschema.ValidationError, match="queueUrl"):
        jsonschema.Draft7Validator(crd_schema()).validate(queue)


def test_the_default_waveflowqueue_carries_the_values(all_on_manifests: Manifests) -> None:
    spec = find(all_on_manifests, "WaveflowQueue")["spec"]
    assert spec["queueUrl"] == "https://sqs.eu-west-1.amazonaws.com/123456789012/audio-processing"
    assert spec["deadLetterQueueUrl"].endswith("/audio-processing-dlq")
    assert spec["bucket"] == "platform-audio-uploads"
    assert spec["uploadPrefixes"] == ["audio/", "uploads/"]
    assert spec["webhookSecretRef"] == {"name": "waveflow-webhook", "key": "WEBHOOK_SECRET"}
    assert spec["maxInFlight"] == 50
    job = spec["job"]
    assert job["image"] == "ghcr.io/waveflow/job:0.1.0"
    assert job["serviceAccountName"] == "waveflow-job"
    assert set(job["resources"]) == {"hash", "duplicate", "analysis"}
    assert job["activeDeadlineSeconds"] == {"hash": 600, "duplicate": 300, "analysis": 3600}
    assert job["tolerations"][0]["key"] == "workload"
    assert job["doNotDisrupt"] is True


def test_the_webhook_secret_is_created_from_a_value_or_referenced(
    all_on_manifests: Manifests,
) -> None:
    secret = find(all_on_manifests, "Secret", "-webhook")
    assert set(secret["data"]) == {"WEBHOOK_SECRET"}
    existing = render(
        (CI_VALUES / "all-on-values.yaml",),
        ("queue.webhookSecret.create=false", "queue.webhookSecret.existingSecret=backend-hmac"),
    )
    assert "Secret" not in kinds(existing)
    ref = find(existing, "WaveflowQueue")["spec"]["webhookSecretRef"]
    assert ref == {"name": "backend-hmac", "key": "WEBHOOK_SECRET"}
    unsigned = render((CI_VALUES / "all-on-values.yaml",), ("queue.webhookSecret.create=false",))
    assert "webhookSecretRef" not in find(unsigned, "WaveflowQueue")["spec"]


def test_the_crd_is_kept_on_uninstall_and_can_be_left_out(default_manifests: Manifests) -> None:
    crd = find(default_manifests, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "waveflowqueues.waveflow.io"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert (
        crd["spec"] == yaml.safe_load((CHART / "files/crds/waveflowqueue.yaml").read_text())["spec"]
    )
    assert "CustomResourceDefinition" not in kinds(render(sets=("crds.install=false",)))


def test_service_accounts_carry_their_irsa_roles(all_on_manifests: Manifests) -> None:
    operator = find(all_on_manifests, "ServiceAccount", "-operator")
    job = find(all_on_manifests, "ServiceAccount", "-job")
    role = "eks.amazonaws.com/role-arn"
    assert operator["metadata"]["annotations"][role].endswith(":role/waveflow-operator")
    assert job["metadata"]["annotations"][role].endswith(":role/waveflow-job")
    assert job["automountServiceAccountToken"] is False


def test_the_operator_deployment_probes_liveness_and_exposes_metrics(
    default_manifests: Manifests,
) -> None:
    deployment = find(default_manifests, "Deployment", "-operator")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    (container,) = spec["template"]["spec"]["containers"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert "--listen-address=0.0.0.0" in container["args"]  # every interface of the pod
    assert "--standalone" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9090, "health": 8080}
    service = find(default_manifests, "Service", "-operator")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["selector"]["matchLabels"] == service["spec"]["selector"]


def test_the_helm_test_hook_checks_the_liveness_endpoint(default_manifests: Manifests) -> None:
    job = find(default_manifests, "Job", "-test-operator-alive")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][-1] == "http://waveflow-operator.waveflow.svc:8080/healthz"


def test_kind_values_point_the_queue_at_the_in_cluster_emulator_and_sink(
    kind_manifests: Manifests,
) -> None:
    spec = find(kind_manifests, "WaveflowQueue")["spec"]
    emulator = find(kind_manifests, "Service", "-emulator")
    sink = find(kind_manifests, "Service", "-webhook-sink")
    emulator_url = (
        f"http://{emulator['metadata']['name']}.waveflow.svc:{emulator['spec']['ports'][0]['port']}"
    )
    assert spec["endpointUrl"] == emulator_url
    assert spec["queueUrl"].startswith(emulator_url + "/123456789012/")
    assert spec["deadLetterQueueUrl"].startswith(emulator_url + "/123456789012/")
    assert spec["webhookUrl"].startswith(f"http://{sink['metadata']['name']}.waveflow.svc:8000/")
    bootstrap = find(kind_manifests, "Job", "-emulator-bootstrap")
    assert bootstrap["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    env = {
        e["name"]: e["value"] for e in bootstrap["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["QUEUE_URL"] == spec["queueUrl"] and env["BUCKET"] == spec["bucket"]
    assert env["AWS_ENDPOINT_URL"] == emulator_url
    for manifest in kind_manifests:
        if manifest["kind"] in {"Deployment", "Job"} and "waveflow/" in str(manifest):
            for container in manifest["spec"]["template"]["spec"]["containers"]:
                if container["image"].startswith("waveflow/"):
                    assert container["imagePullPolicy"] == "Never"  # loaded by `kind load`


def notes(*values: Path) -> str:
    result = run_helm(
        "install", "waveflow", str(CHART), "-n", "waveflow", "--dry-run=client", *value_args(values)
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_tell_the_user_what_to_run_next(default_manifests: Manifests) -> None:
    deployment = find(default_manifests, "Deployment", "-operator")["metadata"]["name"]
    complete = notes(CI_VALUES / "all-on-values.yaml")
    assert f"rollout status deployment/{deployment}" in complete
    assert "helm test waveflow -n waveflow" in complete
    assert "get jobs -l app.kubernetes.io/managed-by=waveflow-operator" in complete
    assert "No WaveflowQueue" not in complete and "no IRSA role" not in complete
    bare = notes()
    assert "No WaveflowQueue was created: set queue.queueUrl" in bare
    assert "no IRSA role is set" in bare


def test_the_listen_address_is_a_value_for_metrics_and_liveness() -> None:
    manifests = render(sets=("operator.listenAddress=127.0.0.1",))
    (container,) = find(manifests, "Deployment", "-operator")["spec"]["template"]["spec"][
        "containers"
    ]
    assert "--listen-address=127.0.0.1" in container["args"]
    assert "--liveness=http://127.0.0.1:8080/healthz" in container["args"]
