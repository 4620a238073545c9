"""Pod Security Standards "restricted" for every pod the chart makes; a least-privilege Role."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from chart.helm import CI_VALUES, find, operator_grants, render
from chart.pss import restricted_violations
from waveflow_job.contract import Task, json_envelope, parse_message
from waveflow_operator.k8s.crd import parse_spec
from waveflow_operator.k8s.jobs import build_job
from waveflow_operator.k8s.permissions import PERMISSIONS
from waveflow_operator.runner.protocol import Delivery, JobRequest, job_name_for

Manifests = list[dict[str, Any]]
Permission = tuple[str, str, str]

#: What the operator does with the Kubernetes API, as it declares it.
DECLARED: frozenset[Permission] = frozenset(
    (group, resource, verb) for group, resource, verbs in PERMISSIONS for verb in verbs
)


def pod_specs(manifests: Manifests) -> dict[str, dict[str, Any]]:
    """Every PodSpec in the rendered manifests, by kind/name."""
    specs = {}
    for manifest in manifests:
        if manifest["kind"] in {"Deployment", "Job"}:
            specs[f"{manifest['kind']}/{manifest['metadata']['name']}"] = manifest["spec"][
                "template"
            ]["spec"]
    return specs


@pytest.mark.parametrize(
    "values",
    [(), (CI_VALUES / "all-on-values.yaml",), (CI_VALUES / "kind-values.yaml",)],
    ids=["defaults", "all-on", "kind"],
)
def test_every_pod_the_chart_makes_meets_the_restricted_profile(values: tuple[Path, ...]) -> None:
    specs = pod_specs(render(values))
    assert any(name.endswith("-operator") for name in specs)
    assert any(name.endswith("-test-operator-alive") for name in specs)
    for name, spec in specs.items():
        assert restricted_violations(spec) == [], name


def test_the_operator_container_runs_read_only_as_non_root(default_manifests: Manifests) -> None:
    spec = find(default_manifests, "Deployment", "-operator")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_the_pss_checker_names_each_broken_rule(default_manifests: Manifests) -> None:
    spec = copy.deepcopy(
        find(default_manifests, "Deployment", "-operator")["spec"]["template"]["spec"]
    )
    spec["hostNetwork"] = True
    spec["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}})
    container = spec["containers"][0]
    container["securityContext"] = {
        "allowPrivilegeEscalation": True,
        "runAsUser": 0,
        "runAsNonRoot": False,
        "capabilities": {"add": ["SYS_ADMIN"]},
        "seccompProfile": {"type": "Unconfined"},
    }
    container["ports"].append({"containerPort": 80, "hostPort": 80})
    found = "\n".join(restricted_violations(spec))
    for rule in (
        "hostNetwork",
        "'hostPath' is not allowed",
        "allowPrivilegeEscalation must be false",
        "runAsNonRoot must be true",
        "runAsUser must not be 0",
        "capabilities.drop must include ALL",
        "capability SYS_ADMIN",
        "'Unconfined'",
        "hostPort 80",
    ):
        assert rule in found


def test_the_pss_checker_accepts_pod_level_settings_for_containers() -> None:
    spec = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "c",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                },
            }
        ],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    }
    assert restricted_violations(spec) == []
    spec["securityContext"] = {}
    assert len(restricted_violations(spec)) == 2


def test_the_role_grants_exactly_the_calls_the_operator_declares(
    default_manifests: Manifests, all_on_manifests: Manifests
) -> None:
    assert operator_grants(default_manifests) == DECLARED
    assert operator_grants(all_on_manifests) == DECLARED


def test_the_operator_has_no_cluster_wide_or_wildcard_permissions(
    all_on_manifests: Manifests,
) -> None:
    assert not [m for m in all_on_manifests if m["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    for permission in operator_grants(all_on_manifests):
        assert "*" not in permission


def secret_rule(manifests: Manifests) -> dict[str, Any]:
    (rule,) = [
        r for r in find(manifests, "Role", "-operator")["rules"] if "secrets" in r["resources"]
    ]
    return rule


def test_the_operator_reads_only_the_webhook_secrets_it_is_told_about(
    all_on_manifests: Manifests,
) -> None:
    assert secret_rule(all_on_manifests)["resourceNames"] == ["waveflow-webhook"]
    more = render(
        (CI_VALUES / "all-on-values.yaml",), ("rbac.webhookSecretNames={other-queue-hmac}",)
    )
    assert secret_rule(more)["resourceNames"] == ["waveflow-webhook", "other-queue-hmac"]
    existing = render(
        (CI_VALUES / "all-on-values.yaml",),
        ("queue.webhookSecret.create=false", "queue.webhookSecret.existingSecret=backend-hmac"),
    )
    assert secret_rule(existing)["resourceNames"] == ["backend-hmac"]


@pytest.mark.parametrize("task", list(Task))
def test_jobs_built_from_the_charts_queue_are_restricted_and_valid(
    all_on_manifests: Manifests, task: Task
) -> None:
    queue = find(all_on_manifests, "WaveflowQueue")
    owner = {**queue["metadata"], "uid": "0b7a1c4e-1111-4222-8333-944455556666"}
    kwargs = {"userId": "u", "trackId": "t", "stemId": "s-1", "filepath": "audio/a.wav"}
    body = json_envelope(task, {**kwargs, "audio_hash": "a" * 64})
    message_id = "5fea7756-0ea4-451a-a703-a558b933e274"
    request = JobRequest(
        job_name_for(task, message_id), parse_message(body),
        Delivery(message_id, "receipt", body, 1_732_600_000_000, 1),
    )  # fmt: skip
    job = build_job(request, *parse_spec(owner["name"], queue["spec"]), owner)
    pod = job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["serviceAccountName"] == find(all_on_manifests, "ServiceAccount", "-job")[
        "metadata"
    ]["name"]
    for version in ("1.30.0", "1.35.0"):
        kubernetes_validate.validate(job, version, strict=True)
