"""Pod Security Standards "restricted" for every pod the chart makes; a least-privilege Role."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from chart.helm import CI_VALUES, find, render
from chart.pss import restricted_violations

Manifests = list[dict[str, Any]]
Permission = tuple[str, str, str]

#: What the operator does with the Kubernetes API, as (apiGroup, resource, verb) — the brief's
#: list, kept beside the Role so a change to either is a deliberate one. The authoritative list is
#: waveflow_operator.k8s_permissions.PERMISSIONS (compared below when the operator ships it).
EXPECTED_PERMISSIONS: frozenset[Permission] = frozenset(
    [("batch", "jobs", v) for v in ("create", "get", "list", "watch", "patch", "delete")]
    + [("", "pods", v) for v in ("get", "list")]
    + [("", "events", v) for v in ("create", "patch")]
    + [
        ("waveflow.io", resource, v)
        for resource in ("waveflowqueues", "waveflowqueues/status")
        for v in ("get", "list", "watch", "patch")
    ]
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


def granted(manifests: Manifests) -> set[Permission]:
    role = find(manifests, "Role", "-operator")
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


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


def test_the_role_grants_exactly_what_the_operator_uses(default_manifests: Manifests) -> None:
    assert granted(default_manifests) == EXPECTED_PERMISSIONS


def test_the_operator_has_no_cluster_wide_or_wildcard_permissions(
    all_on_manifests: Manifests,
) -> None:
    assert not [m for m in all_on_manifests if m["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    for group, resource, verb in granted(all_on_manifests):
        assert "*" not in (group, resource, verb)
        assert resource != "secrets"


def test_the_role_matches_the_calls_the_operator_declares(default_manifests: Manifests) -> None:
    permissions = pytest.importorskip(
        "waveflow_operator.k8s_permissions",
        reason="the operator does not list its API calls yet (waveflow_operator.k8s_permissions)",
    )
    declared = {
        (group, resource, verb)
        for group, resource, verbs in permissions.PERMISSIONS
        for verb in verbs
    }
    assert granted(default_manifests) == declared
