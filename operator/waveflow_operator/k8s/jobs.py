"""The pure Job builder: one message → one ``batch/v1`` Job manifest (a dict).

No I/O and no Kubernetes client: ``build_job(request, queue, template, owner)`` reads only the
typed queue settings and Job template (:mod:`.crd` made both from the WaveflowQueue once) and the
request, so it is unit-tested against the Kubernetes schemas without a server. The job's
environment comes from :func:`waveflow_operator.runner.jobenv.job_env`, the one place both
launchers build it; this module only adds what is Kubernetes-specific (``TMPDIR=/scratch``, the
termination-message path as the summary file, ``WEBHOOK_SECRET`` from its Secret) and the message
body: in ``WAVEFLOW_MESSAGE``, or in a mounted ConfigMap when it is too large for the environment
(:mod:`.message`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from waveflow_job.contract import env as names
from waveflow_operator.k8s.crd import JobTemplate
from waveflow_operator.k8s.message import pod_message
from waveflow_operator.runner.jobenv import SECRET_VARIABLE, job_env
from waveflow_operator.runner.protocol import JobRequest
from waveflow_operator.runner.spec import TASK_KEYS, QueueSpec

__all__ = ["API_VERSION", "CONTAINER_NAME", "KIND", "LABEL_MANAGED_BY", "LABEL_MESSAGE",
           "LABEL_QUEUE", "LABEL_STEM", "LABEL_TASK", "MANAGED_BY", "SCRATCH_PATH",
           "SUMMARY_PATH", "build_job", "queue_selector"]

#: The custom resource every Job belongs to.
API_VERSION = "waveflow.io/v1alpha1"
KIND = "WaveflowQueue"
#: The only container of a job pod (podFailurePolicy names it).
CONTAINER_NAME = "job"
#: The emptyDir every job writes its scratch files to (``TMPDIR``).
SCRATCH_PATH = "/scratch"
#: The container's terminationMessagePath; the job writes its one-line summary there.
SUMMARY_PATH = "/dev/termination-log"
#: The image's non-root user (jobimage/Dockerfile).
JOB_UID = 10001

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "waveflow-operator"
LABEL_QUEUE = "waveflow.io/queue"
LABEL_TASK = "waveflow.io/task"
#: The SQS MessageId (a UUID: always label-safe).
LABEL_MESSAGE = "waveflow.io/sqs-message-id"
#: The stemId, when it is a valid label value; always in the annotation of the same name.
LABEL_STEM = "waveflow.io/stem-id"
ANNOTATION_MESSAGE_ID = "waveflow.io/message-id"
ANNOTATION_SENT = "waveflow.io/sent-timestamp-ms"

#: Variables only the operator sets; ``spec.job.env`` cannot replace them.
_RESERVED_ENV = names.RESERVED
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DO_NOT_DISRUPT = {"karpenter.sh/do-not-disrupt": "true",
                   "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}


def label_safe(value: str | None) -> bool:
    """Whether ``value`` may be a Kubernetes label value (≤ 63 chars, alnum edges)."""
    return value is not None and len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def queue_selector(queue_name: str) -> str:
    """The label selector of every Job one WaveflowQueue made."""
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_QUEUE}={queue_name}"


def build_job(request: JobRequest, queue: QueueSpec, template: JobTemplate,
              owner: Mapping[str, Any]) -> dict[str, Any]:
    """The Job manifest for one message of the WaveflowQueue ``owner`` (its metadata)."""
    task = request.message.task
    queue_name = str(owner["name"])
    labels = _labels(request, queue_name)
    annotations = _annotations(request)
    pod_annotations = dict(template.pod_annotations)
    if template.do_not_disrupt:
        pod_annotations.update(_DO_NOT_DISRUPT)
    pod_labels = {**template.pod_labels, **labels}
    metadata: dict[str, Any] = {
        "name": request.job_name,
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": [{
            "apiVersion": API_VERSION, "kind": KIND, "name": queue_name,
            "uid": str(owner["uid"]), "controller": True, "blockOwnerDeletion": False,
        }],
    }
    if owner.get("namespace"):
        metadata["namespace"] = str(owner["namespace"])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": queue.backoff_limit,
            "activeDeadlineSeconds": int(queue.deadline(task)),
            "ttlSecondsAfterFinished": template.ttl_seconds_after_finished,
            # The Job controller tries the rules in order and the first match wins: an exit 3
            # is final even from a pod being disrupted (the job has told the backend); a
            # disrupted job exits 143 (SIGTERM, cli.py) or 137, so the Ignore rule catches it.
            "podFailurePolicy": {"rules": [
                # Exit 3: the job rejected the message for good; retrying cannot help.
                {"action": "FailJob", "onExitCodes": {
                    "containerName": CONTAINER_NAME, "operator": "In", "values": [3]}},
                # Spot interruptions, drains and preemptions do not burn a retry.
                {"action": "Ignore", "onPodConditions": [
                    {"type": "DisruptionTarget", "status": "True"}]},
            ]},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": _pod_spec(request, queue, template),
            },
        },
    }


def _labels(request: JobRequest, queue_name: str) -> dict[str, str]:
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        "app.kubernetes.io/name": "waveflow-job",
        "app.kubernetes.io/component": "job",
        LABEL_QUEUE: queue_name,
        LABEL_TASK: request.message.task.value,
    }
    if label_safe(request.delivery.sqs_message_id):
        labels[LABEL_MESSAGE] = request.delivery.sqs_message_id
    if label_safe(request.message.stem_id):
        labels[LABEL_STEM] = request.message.stem_id
    return labels


def _annotations(request: JobRequest) -> dict[str, str]:
    """Every id in full, whether or not it fits a label."""
    delivery, message = request.delivery, request.message
    annotations = {LABEL_MESSAGE: delivery.sqs_message_id, LABEL_STEM: message.stem_id}
    if message.message_id:
        annotations[ANNOTATION_MESSAGE_ID] = message.message_id
    if delivery.sent_timestamp_ms is not None:
        annotations[ANNOTATION_SENT] = str(delivery.sent_timestamp_ms)
    return annotations


def _pod_spec(request: JobRequest, queue: QueueSpec,
              template: JobTemplate) -> dict[str, Any]:
    scratch: dict[str, Any] = {"sizeLimit": template.scratch_size_limit}
    if template.scratch_medium:
        scratch["medium"] = template.scratch_medium
    resources = template.resources.get(TASK_KEYS[request.message.task].key) or {}
    message = pod_message(request)  # in the environment, or a mounted ConfigMap if large
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": template.image,
        "imagePullPolicy": template.image_pull_policy,
        "command": ["waveflow-job", "run"],
        "env": _env(request, queue, template, message.env),
        "resources": {k: dict(v) for k, v in resources.items() if k in ("requests", "limits")},
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH_PATH}, *message.mounts],
        "terminationMessagePath": SUMMARY_PATH,
        "terminationMessagePolicy": "File",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if message.args:
        container["args"] = message.args
    if template.env_from:
        container["envFrom"] = [dict(item) for item in template.env_from]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": JOB_UID, "runAsGroup": JOB_UID,
            "fsGroup": JOB_UID, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": scratch}, *message.volumes],
    }
    pod.update(template.scheduling)
    return pod


def _env(request: JobRequest, queue: QueueSpec, template: JobTemplate,
         message_env: Mapping[str, str]) -> list[dict[str, Any]]:
    values = {**message_env, **job_env(request, queue, include_secret=False)}
    values.update({names.SCRATCH_DIR: SCRATCH_PATH, names.SUMMARY_FILE: SUMMARY_PATH})
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values.items()]
    if template.secret_name:
        env.append({"name": SECRET_VARIABLE, "valueFrom": {"secretKeyRef": {
            "name": template.secret_name, "key": template.secret_key}}})
    extra = [dict(item) for item in template.env if item.get("name") not in _RESERVED_ENV]
    overridden = {item["name"] for item in extra}
    return [item for item in env if item["name"] not in overridden] + extra
