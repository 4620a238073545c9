"""Settling notes of invalid messages on Kubernetes: pure builders, no I/O.

A failed job's settling progress lives on its Job (status and the ``waveflow.io/dead-lettered``
annotation), but an invalid message never becomes a Job. Once its copy is in the dead-letter
queue the launcher adds an entry for it to the queue's notes ConfigMap (:func:`notes_name`,
owned by the WaveflowQueue, created on first use) with a merge patch; ``recover`` reads the
entries back, so an operator killed between the copy and the delete only deletes the
redelivery; ``forget`` patches the entry away once the message is gone. Merge patches of
distinct keys never overwrite each other, and the operator deletes no object (its Role has no
``delete``). An entry whose message never came back (the operator died after the delete) is
dropped by ``recover`` once no SQS message can still exist, after SQS's longest retention.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from waveflow_job.contract import Outcome
from waveflow_operator.k8s.jobs import API_VERSION, KIND, LABEL_MANAGED_BY, LABEL_QUEUE, MANAGED_BY
from waveflow_operator.runner.protocol import INVALID_PREFIX, JobResult

__all__ = ["NOTE_SECONDS", "entry_name", "expired_entries", "forget_patch", "is_note_key",
           "notes_config_map", "notes_name", "notes_patch", "results_from_notes"]

#: SQS keeps a message 14 days at most: an older note cannot belong to a message still queued.
NOTE_SECONDS = 14 * 24 * 3600
#: The reason's detail is ours, kept short (the dead letter has it in full).
_DETAIL_LIMIT = 1024


def is_note_key(key: str) -> bool:
    """Whether a ledger key is an invalid message's (its note is a ConfigMap entry, no Job)."""
    return key.startswith(INVALID_PREFIX)


def notes_name(queue_name: str) -> str:
    """The queue's notes ConfigMap (a queue name is ≤ 63 characters, this ≤ 79)."""
    return f"wf-settle-notes-{queue_name}"


def entry_name(key: str) -> str:
    """``invalid-<24 hex of sha256(key)>``: a valid ConfigMap key whatever the MessageId."""
    return f"{INVALID_PREFIX}{hashlib.sha256(key.encode('utf-8')).hexdigest()[:24]}"


def _entry(result: JobResult, noted_at: float) -> str:
    return json.dumps({"key": result.job_name, "errorCode": result.error_code,
                       "errorMessage": (result.error_message or "")[:_DETAIL_LIMIT],
                       "notedAt": round(noted_at)})


def notes_patch(result: JobResult, noted_at: float) -> dict[str, Any]:
    """The merge patch that adds the note of ``result`` (an invalid message, dead-lettered)."""
    return {"data": {entry_name(result.job_name): _entry(result, noted_at)}}


def forget_patch(key: str) -> dict[str, Any]:
    """The merge patch that removes the note of ``key`` (null deletes a key)."""
    return {"data": {entry_name(key): None}}


def notes_config_map(queue_name: str, owner: Mapping[str, Any],
                     patch: Mapping[str, Any]) -> dict[str, Any]:
    """The queue's notes ConfigMap, created holding the entry of ``patch``."""
    metadata: dict[str, Any] = {
        "name": notes_name(queue_name),
        "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_QUEUE: queue_name},
        "ownerReferences": [{"apiVersion": API_VERSION, "kind": KIND, "name": queue_name,
                             "uid": str(owner["uid"]), "blockOwnerDeletion": False}],
    }
    if owner.get("namespace"):
        metadata["namespace"] = str(owner["namespace"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
            "data": dict(patch["data"])}


def _entries(config_map: Mapping[str, Any] | None) -> dict[str, tuple[JobResult, float]]:
    """Readable entries: ConfigMap key → (dead-lettered result, when noted)."""
    found: dict[str, tuple[JobResult, float]] = {}
    for name, text in ((config_map or {}).get("data") or {}).items():
        try:
            document = json.loads(text)
            key, noted_at = str(document["key"]), float(document["notedAt"])
        except (ValueError, KeyError, TypeError):
            continue
        if not is_note_key(key) or entry_name(key) != name:
            continue
        found[name] = (JobResult(key, Outcome.FAILED, document.get("errorCode") or None,
                                 document.get("errorMessage") or None, dead_lettered=True),
                       noted_at)
    return found


def results_from_notes(config_map: Mapping[str, Any] | None, now: float) -> dict[str, JobResult]:
    """Ledger key → the dead-lettered result of every entry still young enough to matter."""
    return {result.job_name: result for result, noted_at in _entries(config_map).values()
            if now - noted_at <= NOTE_SECONDS}


def expired_entries(config_map: Mapping[str, Any] | None, now: float) -> list[str]:
    """Ledger keys of entries no queued message can still need."""
    return [result.job_name for result, noted_at in _entries(config_map).values()
            if now - noted_at > NOTE_SECONDS]
