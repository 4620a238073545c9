"""How a Kubernetes job's pod gets its message body: pure builders, no I/O.

SQS accepts bodies of up to 1 MiB, but the kernel refuses to exec a process with one
environment string over 128 KiB (``MAX_ARG_STRLEN``; exec fails with E2BIG, and the pod could
never start). So:

- a body of up to :data:`ENV_LIMIT_BYTES` travels in ``WAVEFLOW_MESSAGE``, as always;
- a larger one travels in a ConfigMap named after the Job (:func:`message_config_map`) and
  owned by it, so it is garbage-collected with the Job. The pod mounts it read-only at
  :data:`MESSAGE_DIR` and the container runs ``waveflow-job run --message-file
  /message/body``. The launcher creates the ConfigMap right after the Job; the kubelet keeps
  the pod waiting until a volume's ConfigMap exists, so the order cannot lose the message.

A ConfigMap holds up to 1 MiB of data, as much as SQS can deliver. (A downward-API volume of an
annotation cannot: all of an object's annotations together are limited to 256 KiB.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from waveflow_job.contract import env as names
from waveflow_operator.runner.protocol import JobRequest

__all__ = ["ENV_LIMIT_BYTES", "MESSAGE_DIR", "MESSAGE_FILE", "MESSAGE_KEY", "MESSAGE_VARIABLE",
           "PodMessage", "config_map_name", "message_config_map", "needs_config_map",
           "owned_by", "pod_message"]

#: The variable ``waveflow-job run`` reads the body from when no ``--message-file`` is given.
MESSAGE_VARIABLE = names.MESSAGE
#: Bodies up to this size (UTF-8 bytes) stay in the environment: half the kernel's limit for one
#: environment string, and small enough to keep the Job and Pod objects small.
ENV_LIMIT_BYTES = 64 * 1024
#: Where a large body's ConfigMap is mounted, and its one key there.
MESSAGE_DIR = "/message"
MESSAGE_KEY = "body"
MESSAGE_FILE = f"{MESSAGE_DIR}/{MESSAGE_KEY}"
_VOLUME = "message"


@dataclass(frozen=True)
class PodMessage:
    """What the pod spec needs to hand the body over (empty parts are left out)."""

    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)


def needs_config_map(request: JobRequest) -> bool:
    """Whether the body is too large for the environment."""
    return len(request.body.encode("utf-8")) > ENV_LIMIT_BYTES


def config_map_name(job_name: str) -> str:
    """The ConfigMap of a Job's message (a Job name is ≤ 63 characters, this ≤ 71)."""
    return f"{job_name}-message"


def pod_message(request: JobRequest) -> PodMessage:
    """The environment, arguments, volume and mount that carry this request's body."""
    if not needs_config_map(request):
        return PodMessage(env={MESSAGE_VARIABLE: request.body})
    return PodMessage(
        args=["--message-file", MESSAGE_FILE],
        volumes=[{"name": _VOLUME, "configMap": {
            "name": config_map_name(request.job_name), "defaultMode": 0o444}}],
        mounts=[{"name": _VOLUME, "mountPath": MESSAGE_DIR, "readOnly": True}])


def message_config_map(request: JobRequest, job: Mapping[str, Any]) -> dict[str, Any]:
    """The ConfigMap holding the body, owned by the created ``job`` (its uid is needed)."""
    meta = job["metadata"]
    metadata: dict[str, Any] = {
        "name": config_map_name(str(meta["name"])),
        "labels": dict(meta.get("labels") or {}),
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": str(meta["name"]),
                             "uid": str(meta["uid"]), "blockOwnerDeletion": False}],
    }
    if meta.get("namespace"):
        metadata["namespace"] = str(meta["namespace"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "immutable": True,
            "data": {MESSAGE_KEY: request.body}}


def owned_by(config_map: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """Whether an existing ConfigMap belongs to this very Job (not an earlier one of its name)."""
    uid = str(job["metadata"]["uid"])
    references = (config_map.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("kind") == "Job" and ref.get("uid") == uid for ref in references)
