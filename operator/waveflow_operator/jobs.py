"""The pure Job builder: one SQS message → one ``batch/v1`` Job manifest (a dict).

No I/O and no Kubernetes client: ``build_job(delivery, spec, owner)`` only reads the
``WaveflowQueue`` spec (charts/waveflow/files/crds/waveflowqueue.yaml) and the delivery, so it is
unit-tested against the Kubernetes schemas without a server. The job's environment comes from
:func:`waveflow_operator.jobenv.job_env`, the one place both launchers build it; this module only
adds what is Kubernetes-specific (``TMPDIR=/scratch``, the termination-message path as the summary
file, ``WEBHOOK_SECRET`` from its Secret).

``spec_to_settings`` turns the same spec into the dispatcher's :class:`QueueSettings`; absent
fields take the defaults the CRD declares (:data:`SPEC_DEFAULTS`; a test keeps both in step).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from waveflow_job.contract import Task
from waveflow_job.contract import env as names
from waveflow_operator.config import QueueSettings
from waveflow_operator.dispatcher import Delivery
from waveflow_operator.jobenv import SECRET_VARIABLE, job_env

__all__ = ["API_VERSION", "CONTAINER_NAME", "KIND", "LABEL_MANAGED_BY", "LABEL_MESSAGE",
           "LABEL_QUEUE", "LABEL_STEM", "LABEL_TASK", "MANAGED_BY", "SCRATCH_PATH",
           "SPEC_DEFAULTS", "SUMMARY_PATH", "TASK_KEYS", "build_job", "queue_selector",
           "spec_to_settings"]

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

#: Where each task's resources and deadline live in ``spec.job``.
TASK_KEYS: Mapping[Task, str] = {Task.HASH: "hash", Task.DUPLICATE: "duplicate",
                                 Task.ANALYSIS: "analysis"}

#: The CRD's defaults, applied again here because nothing guarantees an API server did.
SPEC_DEFAULTS: Mapping[str, Any] = {
    "maxInFlight": 10,
    "receiveBatchSize": 10,
    "waitTimeSeconds": 20,
    "visibilityTimeoutSeconds": 300,
    "webhookSecretRef.key": "WEBHOOK_SECRET",
    "job.imagePullPolicy": "IfNotPresent",
    "job.activeDeadlineSeconds.hash": 600,
    "job.activeDeadlineSeconds.duplicate": 300,
    "job.activeDeadlineSeconds.analysis": 3600,
    "job.backoffLimit": 2,
    "job.ttlSecondsAfterFinished": 3600,
    "job.scratch.medium": "",
    "job.doNotDisrupt": True,
}
#: Not in the CRD's defaults (a quantity), but every scratch volume gets a limit.
DEFAULT_SCRATCH_SIZE = "4Gi"

#: Variables only the operator sets; ``spec.job.env`` cannot replace them.
_RESERVED_ENV = names.RESERVED
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DO_NOT_DISRUPT = {"karpenter.sh/do-not-disrupt": "true",
                   "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}


def _get(spec: Mapping[str, Any], path: str) -> Any:
    """``spec`` at a dotted path, or the CRD default when absent."""
    node: Any = spec
    for part in path.split("."):
        if not isinstance(node, Mapping) or node.get(part) is None:
            return SPEC_DEFAULTS.get(path)
        node = node[part]
    return node


def label_safe(value: str | None) -> bool:
    """Whether ``value`` may be a Kubernetes label value (≤ 63 chars, alnum edges)."""
    return value is not None and len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def queue_selector(queue_name: str) -> str:
    """The label selector of every Job one WaveflowQueue made."""
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_QUEUE}={queue_name}"


def spec_to_settings(name: str, spec: Mapping[str, Any], *,
                     webhook_secret: str | None = None) -> QueueSettings:
    """The dispatcher's settings for one WaveflowQueue (the secret is read by the caller)."""
    deadlines = {task: float(_get(spec, f"job.activeDeadlineSeconds.{key}"))
                 for task, key in TASK_KEYS.items()}
    return QueueSettings(
        name=name,
        queue_url=str(spec.get("queueUrl") or ""),
        bucket=str(spec.get("bucket") or ""),
        webhook_url=str(spec.get("webhookUrl") or "").rstrip("/"),
        dlq_url=spec.get("deadLetterQueueUrl") or None,
        region=spec.get("region") or None,
        endpoint_url=spec.get("endpointUrl") or None,
        upload_prefixes=tuple(spec.get("uploadPrefixes") or ()),
        webhook_secret=webhook_secret,
        max_in_flight=int(_get(spec, "maxInFlight")),
        receive_batch_size=int(_get(spec, "receiveBatchSize")),
        wait_time_seconds=int(_get(spec, "waitTimeSeconds")),
        visibility_timeout_seconds=int(_get(spec, "visibilityTimeoutSeconds")),
        backoff_limit=int(_get(spec, "job.backoffLimit")),
        deadlines=deadlines,
    )


def build_job(delivery: Delivery, spec: Mapping[str, Any],
              owner: Mapping[str, Any]) -> dict[str, Any]:
    """The Job manifest for one message of the WaveflowQueue ``owner`` (its metadata)."""
    job_spec: Mapping[str, Any] = spec.get("job") or {}
    task = delivery.message.task
    queue_name = str(owner["name"])
    labels = _labels(delivery, queue_name)
    annotations = _annotations(delivery)
    pod_annotations = dict(job_spec.get("podAnnotations") or {})
    if _get(spec, "job.doNotDisrupt"):
        pod_annotations.update(_DO_NOT_DISRUPT)
    pod_labels = {**(job_spec.get("podLabels") or {}), **labels}
    metadata: dict[str, Any] = {
        "name": delivery.job_name,
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
            "backoffLimit": int(_get(spec, "job.backoffLimit")),
            "activeDeadlineSeconds": int(
                _get(spec, f"job.activeDeadlineSeconds.{TASK_KEYS[task]}")),
            "ttlSecondsAfterFinished": int(_get(spec, "job.ttlSecondsAfterFinished")),
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
                "spec": _pod_spec(delivery, spec, job_spec, queue_name),
            },
        },
    }


def _labels(delivery: Delivery, queue_name: str) -> dict[str, str]:
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        "app.kubernetes.io/name": "waveflow-job",
        "app.kubernetes.io/component": "job",
        LABEL_QUEUE: queue_name,
        LABEL_TASK: delivery.message.task.value,
    }
    if label_safe(delivery.sqs_message_id):
        labels[LABEL_MESSAGE] = delivery.sqs_message_id
    if label_safe(delivery.message.stem_id):
        labels[LABEL_STEM] = delivery.message.stem_id
    return labels


def _annotations(delivery: Delivery) -> dict[str, str]:
    """Every id in full, whether or not it fits a label."""
    annotations = {LABEL_MESSAGE: delivery.sqs_message_id, LABEL_STEM: delivery.message.stem_id}
    if delivery.message.message_id:
        annotations[ANNOTATION_MESSAGE_ID] = delivery.message.message_id
    if delivery.sent_timestamp_ms is not None:
        annotations[ANNOTATION_SENT] = str(delivery.sent_timestamp_ms)
    return annotations


def _pod_spec(delivery: Delivery, spec: Mapping[str, Any], job_spec: Mapping[str, Any],
              queue_name: str) -> dict[str, Any]:
    scratch: dict[str, Any] = {"sizeLimit": (job_spec.get("scratch") or {}).get("sizeLimit")
                               or DEFAULT_SCRATCH_SIZE}
    if _get(spec, "job.scratch.medium"):
        scratch["medium"] = _get(spec, "job.scratch.medium")
    resources = (job_spec.get("resources") or {}).get(TASK_KEYS[delivery.message.task]) or {}
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": str(job_spec.get("image") or ""),
        "imagePullPolicy": _get(spec, "job.imagePullPolicy"),
        "command": ["waveflow-job", "run"],
        "env": _env(delivery, spec, job_spec, queue_name),
        "resources": {k: dict(v) for k, v in resources.items() if k in ("requests", "limits")},
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH_PATH}],
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
    if job_spec.get("envFrom"):
        container["envFrom"] = [dict(item) for item in job_spec["envFrom"]]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": JOB_UID, "runAsGroup": JOB_UID,
            "fsGroup": JOB_UID, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": scratch}],
    }
    optional = {
        "serviceAccountName": job_spec.get("serviceAccountName"),
        "priorityClassName": job_spec.get("priorityClassName"),
        "nodeSelector": job_spec.get("nodeSelector"),
        "tolerations": job_spec.get("tolerations"),
        "affinity": job_spec.get("affinity"),
        "imagePullSecrets": job_spec.get("imagePullSecrets"),
    }
    pod.update({key: value for key, value in optional.items() if value})
    return pod


def _env(delivery: Delivery, spec: Mapping[str, Any], job_spec: Mapping[str, Any],
         queue_name: str) -> list[dict[str, Any]]:
    settings = spec_to_settings(queue_name, spec)
    values = job_env(delivery, settings, include_secret=False)
    values.update({names.SCRATCH_DIR: SCRATCH_PATH, names.SUMMARY_FILE: SUMMARY_PATH})
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values.items()]
    secret_ref = spec.get("webhookSecretRef") or {}
    if secret_ref.get("name"):
        env.append({"name": SECRET_VARIABLE, "valueFrom": {"secretKeyRef": {
            "name": secret_ref["name"], "key": _get(spec, "webhookSecretRef.key")}}})
    extra = [dict(item) for item in job_spec.get("env") or []
             if item.get("name") not in _RESERVED_ENV]
    overridden = {item["name"] for item in extra}
    return [item for item in env if item["name"] not in overridden] + extra
