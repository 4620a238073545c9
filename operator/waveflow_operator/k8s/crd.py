"""The WaveflowQueue spec (charts/waveflow/files/crds/waveflowqueue.yaml), read ONCE: into the
:class:`QueueSpec` the dispatcher and the launcher share, and the :class:`JobTemplate` only the
Job builder needs.

Absent fields take the CRD's defaults again here, because nothing guarantees an API server
applied them: the numbers from the one table (:data:`waveflow_operator.runner.spec.TUNABLES`),
the pod's own fields from :data:`TEMPLATE_DEFAULTS`. Tests check both against the CRD.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from waveflow_operator.runner.spec import TUNABLES, ConfigError, QueueSpec, tunable_fields

__all__ = ["DEFAULT_JOB_TTL_SECONDS", "DEFAULT_SCRATCH_SIZE", "REDELIVERY_MARGIN_SECONDS",
           "SPEC_DEFAULTS", "TEMPLATE_DEFAULTS", "JobTemplate", "job_ttl", "parse_spec"]

#: The CRD's defaults of the Job template's own fields (not numbers of the queue).
TEMPLATE_DEFAULTS: Mapping[str, Any] = {
    "webhookSecretRef.key": "WEBHOOK_SECRET",
    "job.imagePullPolicy": "IfNotPresent",
    "job.scratch.medium": "",
    "job.doNotDisrupt": True,
}
#: Every default the CRD declares, by dotted path in the spec.
SPEC_DEFAULTS: Mapping[str, Any] = {**{t.crd_path: t.default for t in TUNABLES},
                                    **TEMPLATE_DEFAULTS}
#: Not in the CRD's defaults (a quantity), but every scratch volume gets a limit.
DEFAULT_SCRATCH_SIZE = "4Gi"
#: A finished Job is the record of its message's result (and of its dead letter) until the
#: message is deleted. An operator that dies between the Job's end and the delete leaves the
#: message invisible for up to one visibility timeout; it is then handled once an operator polls
#: again (a restart, CrashLoopBackOff, a backlog ahead of it): this much longer. A Job already
#: deleted by its TTL then is not adopted: the work runs again, and a failed Job's message could
#: get a SUCCESS after its FAILURE.
REDELIVERY_MARGIN_SECONDS = 900
#: ``job.ttlSecondsAfterFinished`` when unset (raised to what the visibility timeout needs).
DEFAULT_JOB_TTL_SECONDS = 3600


@dataclass(frozen=True)
class JobTemplate:
    """``spec.job`` and the Secret reference: what a Job's pod looks like, beyond the queue."""

    image: str
    image_pull_policy: str = TEMPLATE_DEFAULTS["job.imagePullPolicy"]
    ttl_seconds_after_finished: int = DEFAULT_JOB_TTL_SECONDS
    scratch_size_limit: str | int = DEFAULT_SCRATCH_SIZE
    scratch_medium: str = TEMPLATE_DEFAULTS["job.scratch.medium"]
    #: Task key (``hash``, ``duplicate``, ``analysis``) → ``{"requests": …, "limits": …}``.
    resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    env: tuple[Mapping[str, Any], ...] = ()
    env_from: tuple[Mapping[str, Any], ...] = ()
    #: The Secret holding the webhook signing key; None: unsigned webhooks.
    secret_name: str | None = None
    secret_key: str = TEMPLATE_DEFAULTS["webhookSecretRef.key"]
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    do_not_disrupt: bool = TEMPLATE_DEFAULTS["job.doNotDisrupt"]
    #: Passed to the pod as they are, when set.
    scheduling: Mapping[str, Any] = field(default_factory=dict)


#: Pod fields copied from ``spec.job`` unchanged, when set.
_SCHEDULING = ("serviceAccountName", "priorityClassName", "nodeSelector", "tolerations",
               "affinity", "imagePullSecrets")


def _get(spec: Mapping[str, Any], path: str) -> Any:
    """``spec`` at a dotted path, or the CRD default when absent."""
    node: Any = spec
    for part in path.split("."):
        if not isinstance(node, Mapping) or node.get(part) is None:
            return SPEC_DEFAULTS.get(path)
        node = node[part]
    return node


def job_ttl(configured: Any, visibility_timeout_seconds: int) -> int:
    """The Job's ``ttlSecondsAfterFinished``: unset → 3600 s or the visibility timeout plus the
    redelivery margin, whichever is longer; set shorter than that → ConfigError."""
    floor = visibility_timeout_seconds + REDELIVERY_MARGIN_SECONDS
    if configured is None:
        return max(DEFAULT_JOB_TTL_SECONDS, floor)
    if int(configured) < floor:
        raise ConfigError(
            f"spec.job.ttlSecondsAfterFinished ({int(configured)}) must be at least "
            f"visibilityTimeoutSeconds + {REDELIVERY_MARGIN_SECONDS} ({floor}): a message whose "
            "operator died after its Job ended comes back up to one visibility timeout later "
            "and must still find the Job, or its work runs again")
    return int(configured)


def parse_spec(name: str, spec: Mapping[str, Any], *,
               webhook_secret: str | None = None) -> tuple[QueueSpec, JobTemplate]:
    """One WaveflowQueue's spec, typed; raises ConfigError for what the CRD should have refused
    (the secret's value is read by the caller)."""
    numbers = {t.attribute: _get(spec, t.crd_path) for t in TUNABLES}
    queue = QueueSpec(
        name=name,
        queue_url=str(spec.get("queueUrl") or ""),
        bucket=str(spec.get("bucket") or ""),
        webhook_url=str(spec.get("webhookUrl") or "").rstrip("/"),
        dlq_url=spec.get("deadLetterQueueUrl") or None,
        region=spec.get("region") or None,
        endpoint_url=spec.get("endpointUrl") or None,
        upload_prefixes=tuple(spec.get("uploadPrefixes") or ()),
        webhook_secret=webhook_secret,
        **tunable_fields(numbers),
    )
    job: Mapping[str, Any] = spec.get("job") or {}
    if not job.get("image"):
        raise ConfigError("spec.job.image is required")
    scratch = job.get("scratch") or {}
    secret = spec.get("webhookSecretRef") or {}
    template = JobTemplate(
        image=str(job["image"]),
        image_pull_policy=str(_get(spec, "job.imagePullPolicy")),
        ttl_seconds_after_finished=job_ttl(job.get("ttlSecondsAfterFinished"),
                                           queue.visibility_timeout_seconds),
        scratch_size_limit=scratch.get("sizeLimit") or DEFAULT_SCRATCH_SIZE,
        scratch_medium=str(_get(spec, "job.scratch.medium")),
        resources={key: dict(value) for key, value in (job.get("resources") or {}).items()},
        env=tuple(dict(item) for item in job.get("env") or []),
        env_from=tuple(dict(item) for item in job.get("envFrom") or []),
        secret_name=secret.get("name") or None,
        secret_key=str(_get(spec, "webhookSecretRef.key")),
        pod_labels=dict(job.get("podLabels") or {}),
        pod_annotations=dict(job.get("podAnnotations") or {}),
        do_not_disrupt=bool(_get(spec, "job.doNotDisrupt")),
        scheduling={key: job[key] for key in _SCHEDULING if job.get(key)},
    )
    return queue, template
