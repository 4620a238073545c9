"""The pure Job builder: valid Kubernetes, restricted, and the same environment as a local job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import ValidationError, latest_version

from chart.pss import restricted_violations
from waveflow_job.contract import Task, json_envelope, parse_message
from waveflow_operator.k8s import jobs
from waveflow_operator.k8s.crd import SPEC_DEFAULTS, parse_spec
from waveflow_operator.k8s.message import message_config_map
from waveflow_operator.runner.jobenv import job_env
from waveflow_operator.runner.protocol import Delivery, JobRequest, job_name_for

CRD = Path(__file__).resolve().parents[2] / "charts/waveflow/files/crds/waveflowqueue.yaml"
OWNER = {"name": "audio", "namespace": "media", "uid": "0b7a1c4e-1111-4222-8333-944455556666"}
SQS_ID = "5fea7756-0ea4-451a-a703-a558b933e274"


def spec(**overrides: Any) -> dict[str, Any]:
    job = {"image": "ghcr.io/waveflow/job:0.1.0",
           "resources": {"analysis": {"requests": {"cpu": "500m", "memory": "512Mi"},
                                      "limits": {"memory": "1Gi"}},
                         "hash": {"requests": {"cpu": "100m"}}},
           **overrides.pop("job", {})}
    return {"queueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/audio",
            "region": "eu-west-1", "bucket": "uploads", "uploadPrefixes": ["audio/"],
            "webhookUrl": "https://backend.example/webhook",
            "webhookSecretRef": {"name": "waveflow-webhook", "key": "WEBHOOK_SECRET"},
            "job": job, **overrides}


def build_job(request: JobRequest, raw_spec: dict[str, Any],
              owner: dict[str, Any]) -> dict[str, Any]:
    """The builder on the spec as the operator reads it (once, into typed settings)."""
    return jobs.build_job(request, *parse_spec(str(owner["name"]), raw_spec), owner)


def spec_to_settings(name: str, raw_spec: dict[str, Any], **kwargs: Any) -> Any:
    queue, _ = parse_spec(name, raw_spec, **kwargs)
    return queue


def request_for(task: Task = Task.ANALYSIS, stem: str = "stem789") -> JobRequest:
    kwargs = {"userId": "user123", "trackId": "track456", "stemId": stem,
              "filepath": "audio/sample.wav", "audio_hash": "a" * 64}
    body = json_envelope(task, kwargs, message_id=f"analysis-{stem}-1")
    return JobRequest(job_name_for(task, SQS_ID), parse_message(body),
                      Delivery(SQS_ID, "receipt", body, 1_732_600_000_000, 1))


def container(job: dict[str, Any]) -> dict[str, Any]:
    [only] = job["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in
            container(job)["env"]}


@pytest.mark.parametrize("task", list(Task))
def test_the_job_is_a_valid_kubernetes_job_for_every_task(task: Task) -> None:
    job = build_job(request_for(task), spec(), OWNER)
    try:
        kubernetes_validate.validate(job, latest_version(), strict=True)
    except ValidationError as error:
        pytest.fail(f"invalid Job: {error.message} at {list(error.path)}")


def test_the_pod_meets_the_restricted_pod_security_standard() -> None:
    job = build_job(request_for(), spec(job={"scratch": {"sizeLimit": "1Gi", "medium": "Memory"}}),
                    OWNER)
    assert restricted_violations(job["spec"]["template"]["spec"]) == []
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"


def test_the_environment_is_the_one_a_local_job_gets_plus_scratch_summary_and_secret() -> None:
    message = request_for()
    env = env_of(build_job(message, spec(), OWNER))
    local = job_env(message, spec_to_settings("audio", spec()), include_secret=False)
    assert {k: env[k] for k in local} == local
    assert env["WAVEFLOW_MESSAGE"] == message.body
    assert env["TMPDIR"] == "/scratch"
    assert env["WAVEFLOW_SUMMARY_FILE"] == container(build_job(message, spec(), OWNER))[
        "terminationMessagePath"] == "/dev/termination-log"
    assert env["WEBHOOK_SECRET"] == {"secretKeyRef": {"name": "waveflow-webhook",
                                                      "key": "WEBHOOK_SECRET"}}
    assert set(env) == {*local, "WAVEFLOW_MESSAGE", "TMPDIR", "WAVEFLOW_SUMMARY_FILE",
                        "WEBHOOK_SECRET"}


def test_extra_env_is_added_but_cannot_replace_what_the_operator_sets() -> None:
    extra = [{"name": "LOG_LEVEL", "value": "DEBUG"}, {"name": "TMPDIR", "value": "/tmp"},
             {"name": "WAVEFLOW_MESSAGE", "value": "{}"}, {"name": "HTTPS_PROXY", "value": "p"}]
    job = build_job(request_for(), spec(job={"env": extra, "envFrom": [
        {"secretRef": {"name": "aws"}}]}), OWNER)
    env = env_of(job)
    assert env["LOG_LEVEL"] == "DEBUG" and env["HTTPS_PROXY"] == "p"
    assert env["TMPDIR"] == "/scratch" and env["WAVEFLOW_MESSAGE"] != "{}"
    assert [item["name"] for item in container(job)["env"]].count("LOG_LEVEL") == 1
    assert container(job)["envFrom"] == [{"secretRef": {"name": "aws"}}]


def test_exit_code_three_fails_the_job_and_disruptions_do_not_count() -> None:
    rules = build_job(request_for(), spec(), OWNER)["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {
        "containerName": "job", "operator": "In", "values": [3]}}
    assert rules[1] == {"action": "Ignore", "onPodConditions": [
        {"type": "DisruptionTarget", "status": "True"}]}


def test_deadline_resources_backoff_and_ttl_come_from_the_spec_per_task() -> None:
    custom = spec(job={"activeDeadlineSeconds": {"hash": 42}, "backoffLimit": 5,
                       "ttlSecondsAfterFinished": 7200})
    hashing = build_job(request_for(Task.HASH), custom, OWNER)
    analysis = build_job(request_for(Task.ANALYSIS), custom, OWNER)
    assert hashing["spec"]["activeDeadlineSeconds"] == 42
    assert analysis["spec"]["activeDeadlineSeconds"] == SPEC_DEFAULTS[
        "job.activeDeadlineSeconds.analysis"]
    assert (hashing["spec"]["backoffLimit"], hashing["spec"]["ttlSecondsAfterFinished"]) == \
        (5, 7200)
    assert container(hashing)["resources"] == {"requests": {"cpu": "100m"}}
    assert container(analysis)["resources"]["limits"] == {"memory": "1Gi"}
    assert container(build_job(request_for(Task.DUPLICATE), custom, OWNER))["resources"] == {}


def test_labels_annotations_and_owner_name_the_queue_task_message_and_stem() -> None:
    job = build_job(request_for(), spec(), OWNER)
    meta = job["metadata"]
    assert meta["name"] == job_name_for(Task.ANALYSIS, SQS_ID)
    assert meta["namespace"] == "media"
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "waveflow-operator",
        "app.kubernetes.io/name": "waveflow-job", "app.kubernetes.io/component": "job",
        "waveflow.io/queue": "audio", "waveflow.io/task": "process_audio_analysis",
        "waveflow.io/sqs-message-id": SQS_ID, "waveflow.io/stem-id": "stem789"}
    assert meta["annotations"]["waveflow.io/message-id"] == "analysis-stem789-1"
    assert meta["ownerReferences"] == [{
        "apiVersion": "waveflow.io/v1alpha1", "kind": "WaveflowQueue", "name": "audio",
        "uid": OWNER["uid"], "controller": True, "blockOwnerDeletion": False}]
    assert job["spec"]["template"]["metadata"]["labels"]["waveflow.io/queue"] == "audio"


def test_a_stem_id_that_is_not_a_valid_label_is_only_an_annotation() -> None:
    stem = "스템 #1+" + "x" * 70
    job = build_job(request_for(stem=stem), spec(), OWNER)
    assert "waveflow.io/stem-id" not in job["metadata"]["labels"]
    assert job["metadata"]["annotations"]["waveflow.io/stem-id"] == stem
    kubernetes_validate.validate(job, latest_version(), strict=True)


def test_autoscaler_annotations_are_on_by_default_and_can_be_turned_off() -> None:
    on = build_job(request_for(), spec(job={"podAnnotations": {"team": "audio"}}), OWNER)
    off = build_job(request_for(), spec(job={"doNotDisrupt": False}), OWNER)
    assert on["spec"]["template"]["metadata"]["annotations"] == {
        "team": "audio", "karpenter.sh/do-not-disrupt": "true",
        "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
    assert off["spec"]["template"]["metadata"]["annotations"] == {}


def test_scheduling_and_identity_fields_are_passed_to_the_pod() -> None:
    scheduling = {
        "serviceAccountName": "waveflow-job", "priorityClassName": "batch-low",
        "nodeSelector": {"karpenter.sh/capacity-type": "spot"},
        "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}]}}},
        "imagePullSecrets": [{"name": "regcred"}], "imagePullPolicy": "Always",
        "podLabels": {"team": "audio", "waveflow.io/queue": "spoofed"},
        "scratch": {"sizeLimit": "8Gi", "medium": "Memory"},
    }
    job = build_job(request_for(), spec(job=scheduling), OWNER)
    pod = job["spec"]["template"]["spec"]
    for key in ("serviceAccountName", "priorityClassName", "nodeSelector", "tolerations",
                "affinity", "imagePullSecrets"):
        assert pod[key] == scheduling[key]
    assert container(job)["imagePullPolicy"] == "Always"
    assert pod["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "8Gi",
                                                                "medium": "Memory"}}]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "audio" and labels["waveflow.io/queue"] == "audio"
    kubernetes_validate.validate(job, latest_version(), strict=True)


def test_without_a_secret_reference_no_webhook_secret_is_set() -> None:
    bare = spec()
    del bare["webhookSecretRef"]
    assert "WEBHOOK_SECRET" not in env_of(build_job(request_for(), bare, OWNER))


def test_spec_to_settings_applies_the_crd_defaults() -> None:
    settings = spec_to_settings("audio", spec(), webhook_secret="s3cret")
    assert (settings.max_in_flight, settings.receive_batch_size, settings.wait_time_seconds,
            settings.visibility_timeout_seconds, settings.backoff_limit) == (10, 10, 20, 300, 2)
    assert settings.deadline(Task.ANALYSIS) == 3600 and settings.webhook_secret == "s3cret"
    assert settings.upload_prefixes == ("audio/",) and settings.dlq_url is None
    custom = spec_to_settings("audio", spec(maxInFlight=3, deadLetterQueueUrl="https://q/dlq",
                                            job={"activeDeadlineSeconds": {"hash": 9}}))
    assert custom.max_in_flight == 3 and custom.dlq_url == "https://q/dlq"
    assert custom.deadline(Task.HASH) == 9


def test_the_crd_declares_the_same_defaults_as_the_builder() -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path, value in SPEC_DEFAULTS.items():
        node = schema
        for part in path.split("."):
            node = node["properties"][part]
        assert node.get("default") == value, path


def test_a_body_too_large_for_the_environment_is_mounted_from_a_configmap_the_job_owns() -> None:
    request = request_for()
    big = json.loads(request.body)
    big["kwargs"]["stageNotes"] = "x" * (200 * 1024)
    body = json.dumps(big)
    request = JobRequest(request.job_name, parse_message(body),
                         Delivery(SQS_ID, "receipt", body, 1_732_600_000_000, 1))
    job = build_job(request, spec(), OWNER)
    pod = job["spec"]["template"]["spec"]
    assert "WAVEFLOW_MESSAGE" not in env_of(job)
    assert container(job)["args"] == ["--message-file", "/message/body"]
    assert {"name": "message", "mountPath": "/message", "readOnly": True} in \
        container(job)["volumeMounts"]
    assert {"name": "message", "configMap": {"name": f"{request.job_name}-message",
                                             "defaultMode": 0o444}} in pod["volumes"]
    assert restricted_violations(pod) == []
    try:
        kubernetes_validate.validate(job, latest_version(), strict=True)
    except ValidationError as error:
        pytest.fail(f"invalid Job: {error.message} at {list(error.path)}")
    created = {**job, "metadata": {**job["metadata"], "uid": "job-uid-1"}}
    config_map = message_config_map(request, created)
    assert config_map["data"] == {"body": body} and config_map["immutable"] is True
    assert config_map["metadata"]["name"] == f"{request.job_name}-message"
    assert config_map["metadata"]["ownerReferences"] == [{
        "apiVersion": "batch/v1", "kind": "Job", "name": request.job_name, "uid": "job-uid-1",
        "blockOwnerDeletion": False}]
    try:
        kubernetes_validate.validate(config_map, latest_version(), strict=True)
    except ValidationError as error:
        pytest.fail(f"invalid ConfigMap: {error.message} at {list(error.path)}")
